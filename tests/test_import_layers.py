"""The package's import rules, read from the source with `ast` (imports inside functions
included), so a violation fails here, in the fast tier, not in a reviewer's head:

- no import cycle inside sparkops;
- a folder imports only from itself and from folders of a LOWER layer (below);
- inside bench the same, one level down: results <- load <- measure <- report <- the verbs
  (bench.py, bench_all.py, engines.py, vllm_engine.py at bench's top; BENCH_LAYERS below);
- no module imports a private name (`_x`) from another module;
- node-side scripts import only the standard library and each other (plus, inside functions,
  what the Python they run with has: torch for the all-reduce, transformers for the smoke model).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sparkops"

# Bottom first. A folder may import from its own layer's folder only if it is itself.
LAYERS: list[set[str]] = [
    {"base", "node_scripts"},  # errors, names, paths, progress, tables; what runs on a node
    {"config", "remote"},  # profile stage: layers, schema, checks; running argv on nodes
    {"facts"},  # node facts: the probe, its parsers, the cluster session
    {"plan"},  # the pure planner
    {"apply"},  # running a plan, readiness, the deployment record
    {"checks", "models", "runtimes"},  # inv check / preflight; download, sync; build, install-vllm
    {"deploy"},  # up, down, status, logs
    {"bench", "sim"},  # bench, bench-all, report; the simulated cluster
    {"tune"},  # inv tune: trials through up and bench's sweep
    {"testing"},  # what tests and benchmarks/ run against (the synthetic server): not the product
]
LAYER = {folder: i for i, folders in enumerate(LAYERS) for folder in folders}

# Inside bench, bottom first: a subpackage imports only from itself and lower ones; the modules at
# bench's top (the verbs and the package's __init__) may import any of them, none imports them.
BENCH_LAYERS: list[str] = [
    "results",  # the result files: ours (files.py, result.schema.json) and llama-benchy's JSON
    "load",  # the load generator and what it sends: client, http, records, target, prompts, tokens
    "measure",  # metrics (vLLM's, llama-benchy's), a sweep's cells, running a sweep
    "report",  # inv report: matrices, charts, the HTML page; crossover; inv plan's layouts
]
BENCH_TOP = len(BENCH_LAYERS)  # bench.py, bench_all.py, engines.py, vllm_engine.py, __init__.py
MAX_MODULES_PER_FOLDER = 15

# Node-side scripts: run on a node by a Python that has only the standard library, or the
# serving runtime's Python (RUNTIME_LIBS, imported inside functions only).
NODE_SCRIPTS = sorted((PACKAGE / "node_scripts").glob("*.py")) + [PACKAGE / "sim" / "hostinit.py"]
RUNTIME_LIBS = {"allreduce.py": {"torch"}, "smoke_model.py": {"torch", "transformers", "tokenizers"},
                "router.py": {"vllm_router"}, "litellm_router.py": {"litellm"}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> list[tuple[ast.stmt, str, list[str], bool]]:
    """(node, imported module, names taken from it, at module level?) for every import."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    # Imports run at import time: in the module body, or under a module-level if/try.
    top = {id(n) for stmt in tree.body if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                  ast.ClassDef))
           for n in ast.walk(stmt)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node, a.name, [], id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            out.append((node, source, [a.name for a in node.names], id(node) in top))
    return out


def targets(source: str, names: list[str]) -> list[str]:
    """The sparkops modules an import statement depends on: `from pkg import mod` is the
    module pkg.mod, `from pkg import name` the package pkg itself."""
    out = []
    for name in names or [""]:
        candidate = f"{source}.{name}" if name else source
        module = candidate if candidate in MODULES else source
        while module and module not in MODULES and "." in module:
            module = module.rpartition(".")[0]
        if module in MODULES:
            out.append(module)
    return out


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for _, source, names, _ in imports(path):
            edges[module] |= {t for t in targets(source, names) if t != module}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def folder(module: str) -> str | None:
    """sparkops.plan.env -> plan; the package root -> None (every other module is in a folder)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_folder_has_a_layer():
    folders = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert folders == set(LAYER), "add the folder to LAYERS (or remove it from there)"
    top_modules = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert top_modules == [], "modules belong in a folder: the top level holds only folders"


def bench_part(module: str) -> str | None:
    """sparkops.bench.load.client -> load; sparkops.bench.bench (a verb) or sparkops.bench -> "";
    None outside bench."""
    parts = module.split(".")
    if parts[:2] != ["sparkops", "bench"]:
        return None
    return parts[2] if len(parts) > 3 else ""


def bench_layer(part: str) -> int:
    return BENCH_LAYERS.index(part) if part else BENCH_TOP


def test_every_bench_subpackage_has_a_layer():
    subpackages = {p.parent.name for p in (PACKAGE / "bench").glob("*/__init__.py")}
    assert subpackages == set(BENCH_LAYERS), "add the subpackage to BENCH_LAYERS (or remove it from there)"
    verbs = sorted(p.name for p in (PACKAGE / "bench").glob("*.py"))
    assert verbs == ["__init__.py", "bench.py", "bench_all.py", "engines.py", "vllm_engine.py"]


def test_bench_imports_only_go_down():
    wrong = []
    for module, deps in graph().items():
        here = bench_part(module)
        if here is None:
            continue
        for dep in deps:
            there = bench_part(dep)
            if there is None or here == there:
                continue  # outside bench (the folder rule covers it), or within one subpackage
            if bench_layer(there) >= bench_layer(here):
                wrong.append(f"{module} ({here or 'top'}) imports {dep} ({there or 'top'})")
    assert wrong == []


def test_no_folder_holds_more_than_fifteen_modules():
    crowded = {str(d.relative_to(PACKAGE)): n for d in [PACKAGE, *PACKAGE.rglob("*")] if d.is_dir()
               if (n := len([p for p in d.glob("*.py") if p.name != "__init__.py"])) > MAX_MODULES_PER_FOLDER}
    assert crowded == {}


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_imports_only_go_down():
    wrong = []
    for module, deps in graph().items():
        here = folder(module)
        for dep in deps:
            there = folder(dep)
            if here is None or there is None or here == there:
                continue  # the package's own __init__ (the version), or within one folder
            if LAYER[there] >= LAYER[here]:
                wrong.append(f"{module} (layer {LAYER[here]}) imports {dep} (layer {LAYER[there]})")
    assert wrong == []


def test_nothing_in_the_product_imports_the_test_helpers():
    """The synthetic server is a test fixture: it lives in sparkops/testing, and no module outside
    that folder (bench above all, whose numbers it must never stand in for) imports it."""
    assert not (PACKAGE / "bench" / "synthetic_server.py").exists()
    assert (PACKAGE / "testing" / "synthetic_server.py").is_file()
    wrong = [f"{module} imports {dep}" for module, deps in graph().items() if folder(module) != "testing"
             for dep in deps if folder(dep) == "testing"]
    assert wrong == []
    bench = [m for m in MODULES if m.startswith("sparkops.bench")]
    assert bench and not any("synthetic_server" in m for m in bench)


def test_the_package_root_imports_nothing():
    assert graph()["sparkops"] == set()


def test_no_private_name_is_imported_from_another_module():
    wrong = [f"{module}: from {source} import {name}"
             for module, path in MODULES.items()
             for _, source, names, _ in imports(path)
             for name in names if name.startswith("_") and not name.startswith("__")]
    assert wrong == []


def test_tests_import_no_private_names():
    wrong = [f"{path.name}: from {source} import {name}"
             for path in sorted(Path(__file__).parent.glob("*.py"))
             for _, source, names, _ in imports_of_file(path)
             for name in names if source.startswith("sparkops") and name.startswith("_")
             and not name.startswith("__")]
    assert wrong == []


def imports_of_file(path: Path) -> list[tuple[ast.stmt, str, list[str], bool]]:
    tree = ast.parse(path.read_text(), str(path))
    return [(n, n.module or "", [a.name for a in n.names], True)
            for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]


@pytest.mark.parametrize("path", NODE_SCRIPTS, ids=lambda p: p.name)
def test_node_scripts_import_only_the_standard_library(path: Path):
    siblings = {p.stem for p in path.parent.glob("*.py")}
    wrong = []
    for node, source, _, at_top in imports(path):
        root = source.split(".")[0]
        if root in sys.stdlib_module_names or root == "__future__":
            continue
        if source.startswith("sparkops.node_scripts") or root in siblings and path.parent.name == "node_scripts":
            continue  # each other: copied to the node side by side
        if not at_top and root in RUNTIME_LIBS.get(path.name, set()):
            continue  # the runtime's Python has it; imported only where it is used
        wrong.append(f"line {node.lineno}: {source}")
    assert wrong == [], f"{path.name} imports more than the standard library"


def test_the_rules_catch_what_they_are_for(tmp_path):
    """The checks themselves: a cycle and an upward import in a made-up graph are found."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert folder("sparkops.plan.env") == "plan" and folder("sparkops") is None
    assert targets("sparkops.plan", ["env"]) == ["sparkops.plan.env"]
    assert targets("sparkops.plan", ["plan_up"]) == ["sparkops.plan"]
    assert bench_part("sparkops.bench.load.client") == "load" and bench_part("sparkops.bench.bench") == ""
    assert bench_part("sparkops.bench") == "" and bench_part("sparkops.plan.env") is None
    assert bench_layer("results") < bench_layer("load") < bench_layer("measure") < bench_layer("report")
    assert bench_layer("report") < bench_layer("")

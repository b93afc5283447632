"""Every `inv VERB --flag ...` that sparkops can print names a task of tasks.py and flags that
task has. The commands are collected from the source: every string the package could print
(string constants, f-strings, `+` of strings; fix= arguments, errors, checks, hints, progress
lines, docstrings), plus the package's shell scripts. An f-string placeholder that is a local
name bound once to a string is read through (`flag = f"--profile ..."`); any other placeholder
becomes a marker that stands for one unknown word, never checked."""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sparkops"
MARK = "\x00"  # a placeholder's value: one word we cannot know

_BACKTICKED = re.compile(r"`inv ([^`]*)`")
_BARE = re.compile(r"(?<![`\w-])inv ([a-z][\w-]*(?: (?!inv )[^\s`]+)*)")
_VERB = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    text: str  # what follows `inv `


def task_flags() -> dict[str, set[str]]:
    """{dashed verb: its long flags, inverse flags included}, from invoke's own parser contexts
    of tasks.py's collection: what `inv --list` and `inv --help VERB` show."""
    import tasks
    out = {}
    for ctx in tasks.ns.to_contexts():
        flags = {f for f in ctx.flags if f.startswith("--")} | set(ctx.inverse_flags)
        for name in (ctx.name, *ctx.aliases):
            out[name] = flags
    return out


class Strings:
    """Renders string expressions of one module, reading local names bound once to a string."""

    def __init__(self, tree: ast.Module):
        self.bound: dict[int, dict[str, ast.expr | None]] = {}  # scope node id -> name -> value
        self.scope_of: dict[int, ast.AST] = {}
        self._index(tree, tree)

    def _index(self, node: ast.AST, scope: ast.AST) -> None:
        names = self.bound.setdefault(id(scope), {})
        for child in ast.iter_child_nodes(node):
            inner = child if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) else scope
            self.scope_of[id(child)] = inner
            if isinstance(child, ast.Assign):
                for target in child.targets:
                    for name, value in _pairs(target, child.value):
                        names[name] = value if name not in names else None  # bound twice: unknown
            self._index(child, inner)

    def render(self, node: ast.expr, scope: ast.AST, depth: int = 0) -> str | None:
        if isinstance(node, ast.Constant):
            return node.value if isinstance(node.value, str) else None
        if isinstance(node, ast.JoinedStr):
            return "".join(self.render(v, scope, depth) or MARK if isinstance(v, ast.Constant)
                           else self._placeholder(v, scope, depth) for v in node.values)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self.render(node.left, scope, depth), self.render(node.right, scope, depth)
            if left is None and right is None:
                return None
            return (left if left is not None else MARK) + (right if right is not None else MARK)
        return None

    def _placeholder(self, value: ast.expr, scope: ast.AST, depth: int) -> str:
        inner = value.value if isinstance(value, ast.FormattedValue) else value
        if isinstance(inner, ast.Name) and depth < 3:
            bound = self.bound.get(id(scope), {}).get(inner.id)
            if bound is not None:
                text = self.render(bound, scope, depth + 1)
                if text is not None:
                    return text
        return MARK


def _pairs(target: ast.expr, value: ast.expr):
    if isinstance(target, ast.Name):
        yield target.id, value
    elif isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts):
        for t, v in zip(target.elts, value.elts):
            yield from _pairs(t, v)
    elif isinstance(target, ast.Tuple):
        for t in target.elts:
            if isinstance(t, ast.Name):
                yield t.id, None


def module_strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every maximal string expression in a module."""
    tree = ast.parse(path.read_text(), str(path))
    strings = Strings(tree)
    out: list[tuple[int, str]] = []

    def visit(node: ast.AST, scope: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            inner = strings.scope_of.get(id(child), scope)
            if isinstance(child, (ast.Constant, ast.JoinedStr, ast.BinOp)):
                text = strings.render(child, inner)
                if text is not None:
                    out.append((child.lineno, text))
                    continue
            visit(child, inner)
    visit(tree, tree)
    return out


def commands_in(text: str) -> list[str]:
    found = [m.group(1) for m in _BACKTICKED.finditer(text)]
    bare = _BACKTICKED.sub(" ", text)  # what is left outside backticks
    found += [m.group(1) for m in _BARE.finditer(bare)]
    return found


def printed_commands() -> list[Command]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT)
        for line, text in module_strings(path):
            out += [Command(f"{rel}:{line}", c) for c in commands_in(text)]
    for path in sorted(PACKAGE.rglob("*.sh")):
        rel = path.relative_to(ROOT)
        for number, line in enumerate(path.read_text().splitlines(), 1):
            out += [Command(f"{rel}:{number}", c) for c in commands_in(line.replace("\\`", "`"))]
    return out


def problems(command: Command, flags: dict[str, set[str]]) -> list[str]:
    """What is wrong with one command: an unknown verb, or a flag that verb lacks. Tokens after
    the verb are flags (`--x`, `--x=v`) and their values; a bare word after a value ends the
    command (prose follows: 'then inv report')."""
    words = command.text.split()
    if not words or MARK in words[0]:
        return []
    verb = words[0].rstrip(".,;:)")
    if not _VERB.match(verb):
        return []
    if verb not in flags:
        return [f"{command.where}: `inv {command.text}`: no task {verb!r} in tasks.py"]
    out = []
    value_ok = False
    for word in words[1:]:
        if word.startswith("--"):
            flag = word.split("=", 1)[0].rstrip(".,;:)")
            if MARK not in flag and flag not in flags[verb]:
                out.append(f"{command.where}: `inv {command.text}`: `inv {verb}` has no flag {flag}")
            value_ok = "=" not in word
        elif value_ok or MARK in word:
            value_ok = False
        else:
            break
    return out


def test_every_printed_inv_command_names_a_task_and_its_flags():
    flags = task_flags()
    commands = printed_commands()
    # The walk must see the commands it is meant to check (else it proves nothing).
    seen = {c.text.split()[0] for c in commands if c.text.split()}
    assert {"sync", "download", "build", "check", "smoke-model", "setup"} <= seen
    wrong = [p for c in commands for p in problems(c, flags)]
    assert not wrong, "\n".join(wrong)


def test_the_walk_reads_local_names_and_catches_wrong_flags(tmp_path):
    """The checker itself: a name bound to an f-string is read through, a wrong flag and an
    unknown verb are both reported, and a placeholder verb is left alone."""
    source = tmp_path / "m.py"
    source.write_text(
        'def f(cfg, who):\n'
        '    flag = f"--profile {cfg.profile} --clustr {cfg.cluster_name}"\n'
        '    a = f"run `inv download {flag}` first"\n'
        '    b = "`inv dowload --profile x`"\n'
        '    c = f"`inv {who}` holds it"\n'
        '    d = "then " + "inv smoke-model --cluster " + who + " and inv report"\n')
    found = [Command(f"m.py:{line}", c) for line, text in module_strings(source) for c in commands_in(text)]
    errors = [p for c in found for p in problems(c, task_flags())]
    assert any("no flag --clustr" in e for e in errors), errors
    assert any("no task 'dowload'" in e for e in errors), errors
    assert len(errors) == 2, errors
    assert {c.text.split()[0] for c in found} >= {"download", "dowload", "smoke-model", "report"}


@pytest.mark.parametrize("text, bad", [
    ("download --profile smoke --cluster sim", False),
    ("build --pull", True),
    ("bench-all --profiles x --layouts a,b, then inv report", False),
    ("check --profile", False),
    ("bench --no-ignore-eos", False),
    ("sync --transport=tcp", False),
    ("sync --transprot=tcp", True),
])
def test_problems_of_one_command(text, bad):
    assert bool(problems(Command("x", text), task_flags())) is bad

"""`inv recipe-import PATH`: the community's Spark recipes (YAML) as sparkops profiles.

Two formats are read (docs/configuration.md#community-recipes-as-profiles says where from):
- recipe_version "1", eugr's spark-vllm-docker `recipes/*.yaml`: `command` is the whole
  `vllm serve ...` text with `{placeholders}` filled from `defaults` in one pass, `{{`/`}}` for
  literal braces; `container`, `env`, `mods`, `cluster_only`/`solo_only`.
- recipe_version "2", the Spark Arena registry (sparkrun): `model`, `defaults`, `command` with
  `{placeholders}` (from `defaults` and `{model}`, filled until nothing changes), `min_nodes`,
  `max_nodes`, `metadata`, `env`, `mods`, `container`.

The serve command is split as a shell would (shlex), and each vLLM flag becomes the profile key
that owns it (--tensor-parallel-size -> serving.tensor_parallel, --kv-cache-dtype, --max-num-seqs,
--speculative-config as a table, ...); any other vLLM flag goes to serving.extra_args verbatim
(`up` checks them against the vLLM it runs). What sparkops owns (--host, --port, --api-key, the
multi-node flags) and what has no equivalent (the container image, mods: runtime patches run in
the container before vLLM starts) is reported, never dropped silently: in the command's output
and as comments at the top of the profile. Placeholders are substituted by name only (no
format specs, no attribute access): a recipe is somebody else's file.
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import tomlkit
import yaml

from sparkops.base.errors import SparkopsError
from sparkops.base.names import check_name
from sparkops.base.paths import profiles_dir
from sparkops.models.profile_new import write_validated

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# vLLM flag -> (profile key, type). Both spellings vLLM accepts.
FLAGS: dict[str, tuple[str, type]] = {
    "--tensor-parallel-size": ("serving.tensor_parallel", int), "-tp": ("serving.tensor_parallel", int),
    "--pipeline-parallel-size": ("serving.pipeline_parallel", int), "-pp": ("serving.pipeline_parallel", int),
    "--data-parallel-size": ("serving.data_parallel", int), "-dp": ("serving.data_parallel", int),
    "--max-model-len": ("serving.max_model_len", int),
    "--gpu-memory-utilization": ("serving.gpu_memory_utilization", float),
    "--kv-cache-dtype": ("serving.kv_cache_dtype", str), "--dtype": ("serving.dtype", str),
    "--quantization": ("serving.quantization", str), "-q": ("serving.quantization", str),
    "--max-num-seqs": ("serving.max_num_seqs", int),
    "--max-num-batched-tokens": ("serving.max_num_batched_tokens", int),
    "--served-model-name": ("serving.served_model_name", str),
    "--speculative-config": ("serving.speculative_config", dict),
    "--distributed-executor-backend": ("distributed.backend", str),
}
SWITCHES = {"--enforce-eager": "serving.enforce_eager", "--enable-expert-parallel": "serving.expert_parallel",
            "--trust-remote-code": "serving.trust_remote_code"}
# sparkops sets these itself (where the API listens, its key, how ranks find each other).
OWNED = {"--host", "--port", "--api-key", "--nnodes", "--node-rank", "--master-addr", "--master-port", "--headless",
         "--data-parallel-address", "--data-parallel-rpc-port", "--data-parallel-size-local",
         "--data-parallel-start-rank"}
# Flags that take no value (the rest of vLLM's take one, or are given as --flag=value).
BARE = {"--enable-prefix-caching", "--no-enable-prefix-caching", "--async-scheduling", "--enable-chunked-prefill",
        "--enable-auto-tool-choice", "--disable-log-requests", "--no-enable-log-requests", "--enable-log-requests",
        "--disable-custom-all-reduce", "--headless", "--enable-sleep-mode", "--disable-cascade-attn",
        "--enable-dbo", "--enable-eplb", *SWITCHES}


@dataclass
class Imported:
    name: str
    values: dict  # dotted profile key -> value
    env: dict[str, str]
    extra_args: list[str]
    reported: list[str] = field(default_factory=list)  # not imported, and why
    source: str = ""


def _fill_v1(command: str, values: dict, where: str) -> str:
    def one(m: re.Match) -> str:
        key = m.group(1)
        if key not in values:
            raise SparkopsError(f"{where}: command names {{{key}}}, which its defaults do not give",
                                step="recipe-import")
        return str(values[key])
    # `{{` and `}}` are literal braces (Python's str.format, which eugr's runner uses).
    parts = re.split(r"(\{\{|\}\})", command)
    return "".join({"{{": "{", "}}": "}"}.get(p, PLACEHOLDER.sub(one, p)) for p in parts)


def _fill_v2(command: str, values: dict) -> tuple[str, list[str]]:
    for _ in range(10):  # until nothing changes (values may name other placeholders)
        new = PLACEHOLDER.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), command)
        if new == command:
            break
        command = new
    return command, sorted(set(PLACEHOLDER.findall(command)))


def _argv(command: str, where: str) -> list[str]:
    text = re.sub(r"\\\s*\n", " ", command)
    try:
        argv = shlex.split(text, comments=True)
    except ValueError as exc:
        raise SparkopsError(f"{where}: its command does not split as a shell would ({exc})",
                            step="recipe-import") from None
    if argv[:2] != ["vllm", "serve"]:
        raise SparkopsError(f"{where}: its command is not `vllm serve ...` ({' '.join(argv[:3])} ...): only vLLM "
                            "recipes are imported", step="recipe-import")
    return argv[2:]


def convert(doc: dict, name: str, where: str) -> Imported:
    if not isinstance(doc, dict):
        raise SparkopsError(f"{where}: not a recipe (a YAML mapping)", step="recipe-import")
    version = str(doc.get("recipe_version", "2"))
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise SparkopsError(f"{where}: defaults is not a mapping", step="recipe-import")
    model = doc.get("model")
    values = {**defaults, **({"model": model} if model else {})}
    reported: list[str] = []
    command = doc.get("command")
    if not isinstance(command, str):
        raise SparkopsError(f"{where}: no `command` (the `vllm serve` text): recipes without one are not imported",
                            step="recipe-import")
    if version == "1":
        command = _fill_v1(command, values, where)
    else:
        command, left = _fill_v2(command, values)
        if left:
            raise SparkopsError(f"{where}: command keeps placeholders its defaults do not fill: "
                                + ", ".join("{" + k + "}" for k in left), step="recipe-import")
    args = _argv(command, where)
    if args and not args[0].startswith("-"):
        model = model or args[0]
        args = args[1:]
    if not model:
        raise SparkopsError(f"{where}: no model (neither `model` nor `vllm serve MODEL`)", step="recipe-import")
    out: dict = {"model.repo": model}
    extra: list[str] = []
    i = 0
    while i < len(args):
        flag, value = args[i], None
        if "=" in flag and flag.startswith("--"):
            flag, value = flag.split("=", 1)
        elif flag not in BARE and i + 1 < len(args) and not args[i + 1].startswith("--"):
            value = args[i + 1]
            i += 1
        i += 1
        if flag in SWITCHES:
            out[SWITCHES[flag]] = True
        elif flag in OWNED:
            reported.append(f"{flag}{' ' + value if value else ''}: sparkops sets it (cluster.ports, "
                            "cluster.api, the backend's multi-node flags)")
        elif flag in FLAGS:
            key, kind = FLAGS[flag]
            try:
                if value is None:
                    raise ValueError(flag)
                out[key] = json.loads(value) if kind is dict else kind(value)
            except (TypeError, ValueError):
                raise SparkopsError(f"{where}: {flag} {value!r} is not a {kind.__name__}",
                                    step="recipe-import") from None
        elif flag.startswith("-"):
            extra += [flag] + ([value] if value is not None else [])
        else:
            extra.append(flag)
    if doc.get("container"):
        reported.append(f"container {doc['container']}: sparkops serves from its own image (`inv build`, or "
                        "cluster.image) or the native runtime's virtualenv")
    for mod in doc.get("mods") or []:
        reported.append(f"mod {mod}: a runtime patch run in the container before vLLM starts; sparkops applies "
                        "none (the flags above may need it: check with `inv up`)")
    for key in ("build_args", "pre_exec", "post_exec", "executor_config"):
        if doc.get(key):
            reported.append(f"{key}: no equivalent in a profile")
    nodes = doc.get("min_nodes") or (2 if doc.get("cluster_only") else None)
    if nodes and nodes > 1:
        reported.append(f"min_nodes {nodes}: run it on a cluster of {nodes} nodes (--cluster)")
    env = doc.get("env") or {}
    if not isinstance(env, dict):
        raise SparkopsError(f"{where}: env is not a mapping", step="recipe-import")
    description = (doc.get("metadata") or {}).get("description") or doc.get("description") or doc.get("name")
    if description:
        out["profile.description"] = str(description).strip().splitlines()[0]
    return Imported(name, out, {str(k): str(v) for k, v in env.items()}, extra, reported, where)


def profile_text(imp: Imported) -> str:
    doc = tomlkit.document()
    doc.add(tomlkit.comment(f"Imported by `inv recipe-import` from {imp.source}: review it."))
    for line in imp.reported:
        doc.add(tomlkit.comment(f"not imported: {line}"))
    doc.add(tomlkit.comment("a recipe has no architecture numbers or weights size: the memory fit is unknown until "
                            "they are added (`inv profile-new` reads them from the model's files)"))
    doc.add(tomlkit.nl())
    tables: dict[str, dict] = {}
    for key, value in imp.values.items():
        table, _, leaf = key.partition(".")
        tables.setdefault(table, {})[leaf] = value
    tables.setdefault("model", {}).setdefault("gated", False)
    if imp.extra_args:
        tables.setdefault("serving", {})["extra_args"] = imp.extra_args
    if imp.env:
        tables["env"] = imp.env
    for table in ("profile", "model", "serving", "distributed", "env"):
        if table in tables:
            t = tomlkit.table()
            for k, v in tables[table].items():
                t[k] = v
            doc[table] = t
    return tomlkit.dumps(doc)


def read_recipe(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SparkopsError(f"{path}: not YAML ({str(exc).splitlines()[0]})", step="recipe-import") from None


def import_recipes(root: Path, source: str, *, name: str | None = None, force: bool = False,
                   validate=None) -> list[tuple[Path, Imported]]:
    """Each recipe of SOURCE (a .yaml file, or a folder of them, searched below) as
    profiles/NAME.toml (NAME: the file's stem, or `name` for one file); validated with
    `validate(name)` (load_config), removed again when it does not validate."""
    src = Path(source).expanduser()
    files = sorted(src.rglob("*.y*ml")) if src.is_dir() else [src]
    if not files or not all(f.is_file() for f in files):
        raise SparkopsError(f"{source}: no recipe file (.yaml) there", step="recipe-import")
    if name and len(files) > 1:
        raise SparkopsError("--name names one profile; the folder holds several recipes", step="recipe-import")
    done = []
    for file in files:
        profile = check_name("profile", (name or file.stem).lower())
        imp = convert(read_recipe(file), profile, str(file))
        path = profiles_dir(root) / f"{profile}.toml"
        if path.exists() and not force:
            raise SparkopsError(f"{path} exists", step="recipe-import",
                                fix="--name OTHER (one recipe), or --force to replace it")
        write_validated(path, profile_text(imp), validate)
        done.append((path, imp))
    return done

"""A stack: several models served at once behind one endpoint that routes by the request's
`model` field. A stack file (profiles/stacks/NAME.toml, validated by stack.schema.json) lists
profiles with a placement: the node each runs on and its share of that node's memory.

Each model is its profile loaded on the cluster as usual (every layer: defaults, cluster,
profile, sparkops.local.toml, environment, --set), then its own `set` from the stack file, then
what a stack member is: one server inside its node (tensor, pipeline and data parallel 1 unless
its `set` says otherwise, within the node's GPUs) with --gpu-memory-utilization = its share. So
each model's own checks (the schema, the memory fit within its share) run as for `up`; on top
the stack checks what only the sum shows: the shares of a node's models, names that must differ
behind one endpoint, nodes that exist.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from jsonschema import Draft202012Validator

from sparkops.base.errors import ConfigError
from sparkops.base.names import check_name, closest
from sparkops.base.paths import project_root
from sparkops.config import Config, chosen_cluster, load_config
from sparkops.config.toml_files import read_toml
from sparkops.config.validate import json_path

# What a node's models may take together. A Spark's memory is the OS's too (unified): NVIDIA's
# playbook gives two models 0.35 + 0.35; one model alone is usually given 0.85-0.9.
NODE_SHARE_MAX = 0.9
# Service names sparkops uses for itself (plan.ALL_SERVICES): a model may not take one.
RESERVED = ("vllm", "ray", "router")
# What a model of a stack is unless its own `set` says otherwise: one server, one GPU.
SINGLE_SERVER = (("serving.tensor_parallel", 1), ("serving.pipeline_parallel", 1), ("serving.data_parallel", 1),
                 ("distributed.backend", '"mp"'))


@dataclass(frozen=True)
class Member:
    name: str  # its service on the node: status, logs, its env and log file
    node: str
    memory: float
    port: int  # where it listens on its node
    cfg: Config

    @property
    def served_model_name(self) -> str:
        return self.cfg.served_model_name


@dataclass(frozen=True)
class Stack:
    name: str
    cluster_name: str
    description: str
    members: tuple[Member, ...]

    @property
    def cfg(self) -> Config:
        """The cluster-wide settings (nodes, ports, runtime, the API key): every member's are
        the same; the first member's stand for the stack's."""
        return self.members[0].cfg

    def config_hash(self) -> str:
        """Identity of what is served: the members' own hashes, in order, with their placement."""
        text = json.dumps([[m.name, m.node, m.port, m.cfg.config_hash()] for m in self.members])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def stacks_dir(root: Path) -> Path:
    return root / "profiles" / "stacks"


def stack_names(root: Path) -> list[str]:
    return sorted(p.stem for p in stacks_dir(root).glob("*.toml"))


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(resources.files(__package__).joinpath("stack.schema.json").read_text())


def _path(root: Path, name: str) -> Path:
    check_name("stack", name)
    path = stacks_dir(root) / f"{name}.toml"
    if path.is_file():
        return path
    near = closest(name, stack_names(root))
    raise ConfigError(f"unknown stack {name!r}" + (f"; did you mean {' or '.join(map(repr, near))}?" if near else ""),
                      details=[f"stacks: {', '.join(stack_names(root)) or '(none)'}"],
                      fix=f"pick one of the names above, or write {path} (docs/stacks.md says how)")


def load_stack(name: str, cluster: str | None = None, *, root: Path | None = None, sets: Sequence[str] = (),
               environ: Mapping[str, str] | None = None) -> Stack:
    """`sets` apply to every model (before its own `set`): e.g. secrets.api_key, model.weights."""
    root = root or project_root()
    path = _path(root, name)
    doc = read_toml(path)
    errors = sorted(Draft202012Validator(schema()).iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError(f"stack {name!r} is not valid ({len(errors)} problem{'s' if len(errors) > 1 else ''})",
                          details=[f"{path}: {json_path(e.absolute_path)}: {e.message}" for e in errors],
                          fix=f"edit {path}; `inv validate --stack {name}` checks again")
    cluster = chosen_cluster(cluster or doc.get("cluster"), root=root, environ=environ)
    members, problems = [], []
    for i, entry in enumerate(doc["models"]):
        where = f"{path}: models[{i}] ({entry['profile']})"
        # One server inside its node, unless its own `set` asks for more of the node's GPUs.
        own = {s.split("=", 1)[0].strip() for s in entry.get("set", [])}
        single = [f"{key}={value}" for key, value in SINGLE_SERVER if key not in own]
        member_sets = [*single, *sets, *entry.get("set", []), f"serving.gpu_memory_utilization={entry['memory']}"]
        try:
            cfg = load_config(entry["profile"], cluster, root=root, sets=member_sets, environ=environ,
                              facts_follow=True)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc.message}", details=exc.details, fix=exc.fix) from None
        members.append((entry, cfg))
    cfg0 = members[0][1]
    nodes = [n["name"] for n in cfg0.nodes]
    gpus = cfg0.cluster.get("gpus_per_node", 1)
    base = cfg0.cluster["ports"]["replicas"]
    out: list[Member] = []
    per_node: dict[str, int] = {}
    for i, (entry, cfg) in enumerate(members):
        where = f"models[{i}] ({entry['profile']})"
        service = entry.get("name") or entry["profile"].lower()
        if entry["node"] not in nodes:
            near = closest(entry["node"], nodes)
            problems.append(f"{where}: node {entry['node']!r} is not in cluster {cluster!r} (its nodes: "
                            f"{', '.join(nodes)})" + (f"; did you mean {near[0]!r}?" if near else ""))
        ranks = cfg.serving["tensor_parallel"] * cfg.serving["pipeline_parallel"] * cfg.serving["data_parallel"]
        if ranks > gpus:
            problems.append(f"{where}: asks for {ranks} GPUs; a model of a stack runs inside its node, "
                            f"which has {gpus}")
        if service in RESERVED:
            problems.append(f"{where}: name {service!r} is sparkops' own service; give it a `name`")
        k = per_node.get(entry["node"], 0)
        per_node[entry["node"]] = k + 1
        out.append(Member(service, entry["node"], float(entry["memory"]), base + k, cfg))
    for label, values in (("name", [m.name for m in out]), ("served model name", [m.served_model_name for m in out])):
        dup = sorted({v for v in values if values.count(v) > 1})
        if dup:
            problems.append(f"two models have the same {label} {', '.join(map(repr, dup))}: behind one endpoint "
                            f"each needs its own (a model's `name`, or its `set` with serving.served_model_name=...)")
    for node in nodes:
        mine = [m for m in out if m.node == node]
        total = sum(m.memory for m in mine)
        if total > NODE_SHARE_MAX + 1e-9:
            problems.append(f"node {node}: its models' memory shares add up to {total:.2f} ("
                            + " + ".join(f"{m.name} {m.memory:g}" for m in mine)
                            + f"), more than {NODE_SHARE_MAX:g}; the rest is the system's")
    if problems:
        raise ConfigError(f"stack {name!r} cannot run on cluster {cluster!r}", details=problems,
                          fix=f"edit {path}; `inv validate --stack {name}` checks again")
    return Stack(name, cluster, doc.get("description", ""), tuple(out))

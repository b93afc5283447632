"""Everything sparkops knows about one node, and its JSON form for recorded facts."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from sparkops.facts.types import DiskFree, Gpu, Interface, MemInfo, ModelBlobs, RoceLink


@dataclass(frozen=True)
class NodeFacts:
    node: str
    source: str  # "live", "recorded: <file>" or "cluster file"
    hostname: str | None = None
    user: str | None = None
    home: str | None = None
    uid: int | None = None  # of the user sparkops runs as there (docker run --user)
    gid: int | None = None
    gpus: tuple[Gpu, ...] = ()
    roce: tuple[RoceLink, ...] = ()
    gid_index: dict[str, int] = field(default_factory=dict)  # HCA -> RoCE v2 IPv4 GID index
    interfaces: dict[str, Interface] = field(default_factory=dict)
    link_speed_mbps: dict[str, int] = field(default_factory=dict)  # /sys/class/net/<if>/speed
    memory: MemInfo | None = None
    disk: DiskFree | None = None
    docker_version: str | None = None
    docker_runtimes: tuple[str, ...] = ()
    vllm_version: str | None = None  # native runtime: vLLM in the cluster's virtualenv
    image_id: str | None = None
    model_present: bool | None = None
    model_blobs: ModelBlobs | None = None
    ports_in_use: tuple[int, ...] = ()
    clock: float | None = None  # the node's epoch time when facts were read
    cpus: int | None = None  # `nproc`
    foreign_files: tuple[str, ...] = ()  # "<owner> <path>" in the caches, not the user's (first few)
    errors: dict[str, str] = field(default_factory=dict)  # fact name -> why it could not be read
    # Fact name -> why this node cannot tell (no `ip` and no python3 to read the interfaces
    # with, ...): not a failure; what needs the fact says so (probe.UNKNOWN).
    unknown: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NodeFacts:
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["gpus"] = tuple(Gpu(**g) for g in data.get("gpus", ()))
        data["roce"] = tuple(RoceLink(**r) for r in data.get("roce", ()))
        data["interfaces"] = {
            name: Interface(**{**i, "ipv4": tuple(tuple(a) for a in i.get("ipv4", ()))})
            for name, i in data.get("interfaces", {}).items()}
        if data.get("memory"):
            data["memory"] = MemInfo(**data["memory"])
        if data.get("disk"):
            data["disk"] = DiskFree(**data["disk"])
        if data.get("model_blobs"):
            data["model_blobs"] = ModelBlobs(**data["model_blobs"])
        for key in ("docker_runtimes", "ports_in_use", "foreign_files"):
            data[key] = tuple(data.get(key, ()))
        return cls(**data)

    @property
    def memory_gib(self) -> float | None:
        return self.memory.total_bytes / 1024 ** 3 if self.memory else None


def load_recorded(path: Path) -> dict[str, NodeFacts]:
    """Recorded facts: {"nodes": [NodeFacts as dict, ...]}, keyed here by node name."""
    data = json.loads(path.read_text())
    out = {}
    for item in data["nodes"]:
        item = {**item, "source": f"recorded: {path.name}"}
        out[item["node"]] = NodeFacts.from_dict(item)
    return out


def from_cluster_file(node: dict) -> NodeFacts:
    """Facts for planning when neither live nor recorded ones exist: only what the file says."""
    ifaces = {}
    if node.get("roce_interface") and node.get("roce_ip"):
        ifaces[node["roce_interface"]] = Interface(node["roce_interface"], "UP", 9000,
                                                   ((node["roce_ip"], 16),), None)
    return NodeFacts(node=node["name"], source="cluster file", interfaces=ifaces)

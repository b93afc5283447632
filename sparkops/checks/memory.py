"""Unified memory before vLLM starts (pure): will vLLM's own start-up check pass on a node?

On a DGX Spark (GB10) or a GH200 the GPU's memory is the host's. vLLM's worker refuses to
start unless CUDA's free memory is at least gpu_memory_utilization x CUDA's total ("Free
memory on device ... is less than desired GPU memory utilization"), and there cudaMemGetInfo
reports about /proc/meminfo's MemFree, not MemAvailable: the page cache counts as used though
the kernel would give it back (vLLM issues 35313, 48140). Right after `inv download` or
`inv sync` the cache holds the model, and a node with plenty of MemAvailable fails. Per node:

    ok      need <= MemFree
    evict   MemFree < need <= MemAvailable: dropping clean cached pages makes room; `up`
            evicts the model's own pages (posix_fadvise DONTNEED needs no root)
    refuse  need > MemAvailable: processes (or the driver) hold the memory; evicting cannot help

where need = gpu_memory_utilization x MemTotal (CUDA's total on unified memory) + a margin.
Clusters without unified memory (or without NVIDIA GPUs) are not checked this way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from sparkops.checks.result import FAIL, OK, WARN, Check
from sparkops.config import Config
from sparkops.facts.types import MemInfo
from sparkops.plan.context import NodeContext

GIB = 1024 ** 3
# vLLM compares only after its API server, engine core and worker have started with torch
# imported, and the worker has made its CUDA context: on unified memory all of that comes out
# of MemFree first (roughly 1 GiB each, an estimate). A node that passes here by a hair would
# still fail there.
MARGIN_BYTES = 3 * GIB
DROP_CACHES = "sudo sh -c 'sync; echo 3 > /proc/sys/vm/drop_caches'"
ACTION_OK, EVICT, REFUSE = "ok", "evict", "refuse"


@dataclass(frozen=True)
class Verdict:
    action: str  # ACTION_OK, EVICT or REFUSE
    gmu: float  # serving.gpu_memory_utilization
    mem: MemInfo
    margin_bytes: int = MARGIN_BYTES

    @property
    def need_bytes(self) -> int:
        """What vLLM asks CUDA for: gpu_memory_utilization x MemTotal."""
        return int(self.gmu * self.mem.total_bytes)

    @property
    def want_bytes(self) -> int:
        return self.need_bytes + self.margin_bytes

    def fitting_utilization(self, room_bytes: int) -> float:
        """The largest gpu_memory_utilization (two decimals, rounded down) whose need and
        margin fit in room_bytes; 0.0 when none does."""
        return max(0.0, math.floor((room_bytes - self.margin_bytes) / self.mem.total_bytes * 100) / 100)

    def evidence(self) -> dict:
        m = self.mem
        return {"action": self.action, "gpu_memory_utilization": self.gmu, "need_gib": gib(self.need_bytes),
                "margin_gib": gib(self.margin_bytes), "mem_total_gib": gib(m.total_bytes),
                "mem_free_gib": gib(m.free_bytes), "mem_available_gib": gib(m.available_bytes),
                "cached_gib": gib(m.cached_bytes)}

    def need_text(self) -> str:
        return (f"vLLM at gpu_memory_utilization {self.gmu} needs {gib_text(self.need_bytes)} of "
                f"{gib_text(self.mem.total_bytes)} free when it starts (+{self.margin_bytes / GIB:.0f} GiB margin)")


def gib(n: int | None) -> float | None:
    """Bytes as GiB for evidence (two decimals)."""
    return None if n is None else round(n / GIB, 2)


def gib_text(n: int | None) -> str:
    """Bytes as GiB for people (one decimal, rounded once)."""
    return "?" if n is None else f"{n / GIB:.1f} GiB"


def decide(mem: MemInfo, gmu: float, margin_bytes: int = MARGIN_BYTES) -> Verdict:
    """ok / evict / refuse for one node's /proc/meminfo (see the module's docstring). Without
    MemFree (a recorded sample quoting a few lines) only MemAvailable can refuse."""
    v = Verdict(ACTION_OK, gmu, mem, margin_bytes)
    if v.want_bytes > mem.available_bytes:
        return Verdict(REFUSE, gmu, mem, margin_bytes)
    if mem.free_bytes is not None and v.want_bytes > mem.free_bytes:
        return Verdict(EVICT, gmu, mem, margin_bytes)
    return v


def applies(cfg: Config) -> bool:
    """vLLM gets --gpu-memory-utilization on NVIDIA only, and only unified memory shares it
    with the page cache."""
    return cfg.cluster["accelerator"] == "nvidia" and bool(cfg.cluster.get("unified_memory"))


def refusal_fix(v: Verdict, node: str) -> str:
    fit = v.fitting_utilization(v.mem.available_bytes)
    less = (f"; or ask for less: `--set serving.gpu_memory_utilization={fit:.2f}` (on `inv up`)"
            if fit >= 0.05 else "")
    return (f"stop what holds the memory on {node} (`ps -eo pid,rss,args --sort=-rss | head` shows the "
            f"largest; `inv down` stops a deployment of sparkops){less}")


def still_short_fix(v: Verdict, node: str) -> str:
    """After the model's own pages were evicted: the rest of the cache belongs to other files."""
    fit = v.fitting_utilization(v.mem.free_bytes or 0)
    less = f"; or ask for less: `--set serving.gpu_memory_utilization={fit:.2f}` (on `inv up`)" if fit >= 0.05 else ""
    return f"drop the rest of the page cache on {node} (needs root): `{DROP_CACHES}`, then `inv up` again{less}"


def _free_text(m: MemInfo) -> str:
    parts = [f"{gib_text(m.free_bytes)} free (MemFree)"] if m.free_bytes is not None else []
    if m.cached_bytes is not None:
        parts.append(f"{gib_text(m.cached_bytes)} in the page cache")
    return ", ".join(parts + [f"{gib_text(m.available_bytes)} available (MemAvailable)"])


def check(node: str, v: Verdict) -> Check:
    """The verdict as `inv check` and `up`'s preflight report it (nothing evicted yet)."""
    seen = _free_text(v.mem)
    if v.action == REFUSE:
        return Check("memory.free", "quick", node, FAIL,
                     f"{seen}: {v.need_text()}; other processes hold the rest", v.evidence(),
                     refusal_fix(v, node))
    if v.action == EVICT:
        return Check("memory.free", "quick", node, WARN,
                     f"{seen}: {v.need_text()}, and on unified memory CUDA counts cached pages as used",
                     v.evidence(), "`inv up` evicts the model's own pages from the page cache before it starts "
                     f"vLLM (no root needed); to drop the whole cache now: `{DROP_CACHES}`")
    return Check("memory.free", "quick", node, OK, f"{seen}: {v.need_text()}", v.evidence())


def checks(cfg: Config, ctxs: list[NodeContext], serving: dict | None = None) -> list[Check]:
    """One memory.free check per node with meminfo, on unified-memory NVIDIA clusters. While a
    deployment serves (`serving`: its state), its vLLM holds that memory: nothing to compare."""
    if not applies(cfg):
        return []
    if serving:
        return [Check("memory.free", "quick", c.name, OK,
                      f"not compared while {serving.get('profile')} is serving: its vLLM holds the memory", {})
                for c in ctxs]
    gmu = cfg.serving["gpu_memory_utilization"]
    return [check(c.name, decide(c.facts.memory, gmu)) for c in ctxs if c.facts.memory]

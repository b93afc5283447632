"""Where a vLLM start-up spent its time, and what memory it took, from vLLM's own log (pure).

vLLM logs each stage of a start with a timestamp to the second: the API server's banner,
the model's config resolved, the engine process initialised, the weights loaded (with their
GiB), torch.compile, the KV cache (GiB and tokens), CUDA graphs captured, the engine ready,
the API up. `up` prints the phases of the last start in the head's log; the GPU proof records
them (benchmarks/results/gpu_h200.json). Tested on logs recorded on an H200
(tests/data/vllm_logs/). Lines that do not come (an eager model captures no CUDA graphs) are
left out, not guessed."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

_STAMP = re.compile(r"\b(?:INFO|WARNING|ERROR|DEBUG) (\d\d-\d\d \d\d:\d\d:\d\d)\b")
# The API server's first line: its banner (vLLM 0.2x: block letters, then "version X"), or
# "vLLM API server version X" (older). Not any "version N" (FlashAttention's own, say).
_START = re.compile(r"(?:vLLM API server version|[▄▀█]\s+version) (\d[\w.+-]*)")
# (phase name as shown, pattern): each phase ends at the first line matching it.
_MARKS = (
    ("config", re.compile(r"Resolved architecture: (\S+)")),
    ("engine process", re.compile(r"Initializing a V1 LLM engine")),
    ("weights", re.compile(r"Model loading took ([\d.]+) GiB(?: memory)? and ([\d.]+) seconds")),
    ("torch.compile", re.compile(r"torch\.compile (?:took|takes) ([\d.]+) s in total")),
    ("KV cache", re.compile(r"GPU KV cache size: ([\d,]+) tokens")),
    ("CUDA graphs", re.compile(r"Graph capturing finished in (\d+) secs?, took ([\d.]+) GiB")),
    ("engine ready", re.compile(r"init engine \(.*\) took ([\d.]+) s")),
    ("API up", re.compile(r"Application startup complete")),
)
_KV_GIB = re.compile(r"Available KV cache memory: ([\d.]+) GiB")


@dataclass
class Startup:
    version: str | None = None
    architecture: str | None = None
    phases: list[tuple[str, float]] = field(default_factory=list)  # (phase, seconds it took)
    weights_gib: float | None = None
    kv_cache_gib: float | None = None
    kv_cache_tokens: int | None = None
    cuda_graphs_gib: float | None = None
    compile_s: float | None = None

    @property
    def total_s(self) -> float:
        """From the API server's first line to the API up (the interpreter's imports before its
        first line are not in the log)."""
        return round(sum(s for _, s in self.phases), 1)

    def line(self) -> str:
        parts = [f"{name} {seconds:.0f}s" for name, seconds in self.phases]
        memory = []
        if self.weights_gib is not None:
            memory.append(f"weights {self.weights_gib:.1f} GiB")
        if self.kv_cache_gib is not None:
            memory.append(f"KV cache {self.kv_cache_gib:.1f} GiB"
                          + (f" ({self.kv_cache_tokens:,} tokens)" if self.kv_cache_tokens else ""))
        if self.cuda_graphs_gib is not None:
            memory.append(f"CUDA graphs {self.cuda_graphs_gib:.2f} GiB")
        return (f"vLLM {self.version or '?'} start-up {self.total_s:.0f}s: " + ", ".join(parts)
                + (f"; {', '.join(memory)}" if memory else ""))

    def as_dict(self) -> dict:
        return {"version": self.version, "architecture": self.architecture, "total_s": self.total_s,
                "phases": [{"phase": n, "seconds": s} for n, s in self.phases], "weights_gib": self.weights_gib,
                "kv_cache_gib": self.kv_cache_gib, "kv_cache_tokens": self.kv_cache_tokens,
                "cuda_graphs_gib": self.cuda_graphs_gib, "compile_s": self.compile_s}


def last_start(text: str) -> Startup | None:
    """The last start-up in a vLLM log (a service's log holds one, a followed log several);
    None when no start is in it."""
    chunks = split_starts(text)
    return parse(chunks[-1]) if chunks else None


def split_starts(text: str) -> list[list[str]]:
    """The log's lines cut at each start (the API server's first line); what comes before the
    first start is left out."""
    lines = text.splitlines()
    begins = [i for i, line in enumerate(lines) if _START.search(line) and _STAMP.search(line)]
    return [lines[a:b] for a, b in zip(begins, begins[1:] + [len(lines)])]


def parse(lines: list[str]) -> Startup:
    out = Startup()
    clock: datetime | None = None
    last = None  # when the previous phase ended
    pending = list(_MARKS)
    for line in lines:
        stamp = _STAMP.search(line)
        if stamp:
            clock = datetime.strptime(stamp.group(1), "%m-%d %H:%M:%S")
            if last is None:
                last = clock
        if out.version is None and (m := _START.search(line)):
            out.version = m.group(1)
        if m := _KV_GIB.search(line):
            out.kv_cache_gib = float(m.group(1))
        for i, (name, pattern) in enumerate(pending):
            m = pattern.search(line)
            if not m or clock is None or last is None:
                continue
            # A line without a timestamp (uvicorn's) ends its phase at the last time seen.
            out.phases.append((name, max(0.0, (clock - last).total_seconds())))
            last = clock
            _measure(out, name, m)
            del pending[:i + 1]  # phases come in this order; one that never came is skipped
            break
    return out


def _measure(out: Startup, name: str, m: re.Match) -> None:
    if name == "config":
        out.architecture = m.group(1)
    elif name == "weights":
        out.weights_gib = float(m.group(1))
    elif name == "torch.compile":
        out.compile_s = float(m.group(1))
    elif name == "KV cache":
        out.kv_cache_tokens = int(m.group(1).replace(",", ""))
    elif name == "CUDA graphs":
        out.cuda_graphs_gib = float(m.group(2))

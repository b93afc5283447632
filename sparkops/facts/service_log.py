"""What of a long service log to show a person: the last lines, the cause, and a fix.

vLLM's usual failure shape is the engine's exception first, then pages of the API server's
own traceback and shutdown messages, so the cause is often above the lines shown."""
from __future__ import annotations

import re

HINTS = [
    (r"current platform \w+ does not support ray",
     "this vLLM build cannot run on Ray (vLLM's CPU build refuses it): set distributed.backend = \"mp\""),
    (r"CUDA out of memory|OutOfMemoryError|Cannot allocate memory",
     "out of memory: lower serving.gpu_memory_utilization or max_model_len; drop the page cache "
     "(`sync; echo 3 | sudo tee /proc/sys/vm/drop_caches`)"),
    (r"NET/Socket", "NCCL fell back to TCP sockets: run `inv check --nccl`"),
    (r"Address already in use", "a port is taken: `inv down`, or change cluster.ports"),
    (r"LocalEntryNotFoundError|offline mode|Cannot find the requested files",
     "the model is not on this node: `inv sync --profile <profile>`"),
    (r"GatedRepoError|401 Client Error", "gated model: accept the license and set a token (`inv setup`)"),
    (r"InvalidCxxCompiler|No working C\+\+ compiler", "torch needs a C++ compiler on CPU: install g++"),
    (r"timed out|Timeout", "nodes could not rendezvous: check the RoCE link (`inv check --network`)"),
]
# A Python exception line, after vLLM's "(EngineCore pid=1) ERROR 11-26 ... [core.py:1] " prefix.
_EXCEPTION = re.compile(r"(?:^|\] |\| )((?:[A-Za-z_][\w.]*)(?:Error|Exception)\b: .+)$")


def hint(text: str) -> str | None:
    for pattern, fix in HINTS:
        if re.search(pattern, text):
            return fix
    return None


def cause(text: str) -> str | None:
    """A line a hint recognises, else the first exception in the log (later ones are usually
    its consequences)."""
    for pattern, _ in HINTS:
        found = re.search(f".*(?:{pattern}).*", text)
        if found:
            return found.group(0).strip()[:300]
    for line in text.splitlines():
        match = _EXCEPTION.search(line.strip())
        if match:
            return match.group(1)[:300]
    return None


def excerpt(text: str, keep: int = 30) -> list[str]:
    return text.rstrip().splitlines()[-keep:]


def explain(text: str, keep: int = 30) -> dict:
    """log_tail, details and fix for a SparkopsError about a failed service."""
    tail = excerpt(text, keep)
    why = cause(text)
    shown = why and any(why in line for line in tail)
    return {"log_tail": tail, "details": [f"cause, from its log: {why}"] if why and not shown else [],
            "fix": hint(text)}

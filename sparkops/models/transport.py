"""How a model's bytes travel from the head to a worker (pure: argv only).

rsync runs on the head and reaches the worker over SSH at its RoCE address, so the bytes
take the cable, not the management network (the ssh argv: sparkops.remote.openssh). Files that are
absent or wrong go whole (`--whole-file`: rsync's delta search only costs CPU on a fast
link); files cut short by an interrupted copy get their missing tail (`--append-verify`,
which checks the whole file afterwards). `--inplace` writes to the final name, so even a
killed copy leaves a prefix that the next sync resumes from.
"""
from __future__ import annotations

import re
import shlex

_LITERAL = re.compile(r"Literal data: ([\d,.]+)")
_PROGRESS = re.compile(r"^\s*([\d,]+)\s+\d+%")


def rsync_argv(ssh: list[str], src_dir: str, address: str, dest_dir: str, *, append: bool) -> list[str]:
    """argv of one rsync stream; the relative paths to copy arrive on stdin, NUL-separated."""
    return ["rsync", "-a", "--inplace", "--mkpath", "--from0", "--files-from=-", "--stats",
            "--info=progress2", "--append-verify" if append else "--whole-file",
            "-e", shlex.join(ssh), src_dir.rstrip("/") + "/", f"{address}:{dest_dir.rstrip('/')}/"]


def split(sizes: dict[str, int], streams: int) -> list[list[str]]:
    """Paths into at most `streams` lists of about equal bytes (largest first, greedy)."""
    buckets: list[tuple[int, list[str]]] = [(0, []) for _ in range(max(1, min(streams, len(sizes))))]
    for rel in sorted(sizes, key=lambda r: (-sizes[r], r)):
        i = min(range(len(buckets)), key=lambda b: buckets[b][0])
        load, items = buckets[i]
        buckets[i] = (load + sizes[rel], items + [rel])
    return [items for _, items in buckets if items]


def literal_bytes(stats: str) -> int:
    """Bytes rsync really sent (its --stats "Literal data"), summed over the output given."""
    return sum(int(m.group(1).replace(",", "").replace(".", "")) for m in _LITERAL.finditer(stats))


def progress_bytes(line: str) -> int | None:
    """Bytes done so far from one `--info=progress2` line, None for other lines."""
    m = _PROGRESS.match(line)
    return int(m.group(1).replace(",", "")) if m else None

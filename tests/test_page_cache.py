"""node_scripts/page_cache.py on this machine's real page cache: a model folder's pages are
dropped without root, links out of the folder are left alone, and the report's numbers are
the kernel's. Residency is measured independently with util-linux's `fincore` (mincore)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sparkops.facts.parsers import parse_meminfo
from sparkops.node_scripts import python_argv

MIB = 1 << 20
MODEL_BYTES = 512 * MIB
OTHER_BYTES = 32 * MIB


def write(path: Path, size: int) -> None:
    """`size` bytes, left dirty in the page cache (no fsync): what a sync just wrote."""
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = b"\x5a" * (8 * MIB)
    with open(path, "wb") as out:
        for _ in range(size // len(chunk)):
            out.write(chunk)


def read(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(8 * MIB):
            pass


def resident(path: Path) -> int:
    """Bytes of the file in the page cache, by fincore (or mincore through the script's own
    ctypes helper where util-linux lacks it)."""
    if shutil.which("fincore"):
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES", str(path)],
                             capture_output=True, text=True, check=True).stdout
        return int(out.split()[0])
    from sparkops.node_scripts.page_cache import Residency
    fd = os.open(path, os.O_RDONLY)
    try:
        value = Residency().resident(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    assert value is not None
    return value


@pytest.fixture
def hf_cache(tmp_path: Path) -> dict[str, Path]:
    """hub/models--org--model: one 512 MiB blob, its snapshot link, and links that lead out
    (an absolute one to a file beside the cache, a relative one to a sibling model's folder);
    the sibling model and the outside file hold 32 MiB each. Everything read into the cache."""
    hub = tmp_path / "hf" / "hub"
    model = hub / "models--org--model"
    blob = model / "blobs" / ("ab" * 32)
    sibling = hub / "models--org--other" / "blobs" / ("cd" * 32)
    outside = tmp_path / "outside.bin"
    write(blob, MODEL_BYTES)
    write(sibling, OTHER_BYTES)
    write(outside, OTHER_BYTES)
    snapshot = model / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(os.path.relpath(blob, snapshot))
    (snapshot / "escape.bin").symlink_to(outside)
    (snapshot / "other").symlink_to(os.path.relpath(sibling.parent.parent, snapshot))
    for path in (blob, sibling, outside):
        read(path)
    return {"model": model, "blob": blob, "sibling": sibling, "outside": outside}


def run_evict(root: Path) -> dict:
    done = subprocess.run(python_argv("page_cache.py", "evict", str(root)), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    return json.loads(line)


def test_the_model_pages_leave_the_page_cache_and_nothing_outside_does(hf_cache):
    blob, sibling, outside = hf_cache["blob"], hf_cache["sibling"], hf_cache["outside"]
    assert resident(blob) >= 0.9 * MODEL_BYTES  # read just now: cached (partly still dirty)
    assert resident(sibling) == OTHER_BYTES and resident(outside) == OTHER_BYTES

    report = run_evict(hf_cache["model"])

    assert resident(blob) <= 0.02 * MODEL_BYTES
    # Links out of the folder (to a file beside the cache, to a sibling model) were not followed.
    assert resident(sibling) == OTHER_BYTES and resident(outside) == OTHER_BYTES
    assert report["exists"] is True
    assert (report["files"], report["bytes"], report["links_skipped"]) == (1, MODEL_BYTES, 3)
    assert report["unmeasured"] == 0 and report["unreadable"] == []
    assert report["resident_before"] >= 0.9 * MODEL_BYTES
    assert report["resident_after"] <= 0.02 * MODEL_BYTES
    before, after = parse_meminfo(report["meminfo_before"]), parse_meminfo(report["meminfo_after"])
    assert before.free_bytes is not None and after.free_bytes is not None
    assert before.total_bytes == after.total_bytes


def test_a_missing_model_folder_reports_nothing_evicted(tmp_path):
    report = run_evict(tmp_path / "hub" / "models--org--absent")
    assert report["exists"] is False and report["files"] == 0 and report["bytes"] == 0
    assert parse_meminfo(report["meminfo_after"]).total_bytes > 0


def test_usage_errors_exit_2():
    done = subprocess.run(python_argv("page_cache.py", "drop", "/"), capture_output=True, text=True)
    assert done.returncode == 2 and "usage: page_cache.py evict ROOT" in done.stderr

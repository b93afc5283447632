"""The copy engine of `inv sync` (node_scripts/transfer.py), run for real on this machine: the
sender and receiver as the processes they are on the nodes (a local receiver stands in for
the SSH hop), the TCP listener with its challenge, and the stream plan (pure)."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparkops.models import transport
from sparkops.node_scripts import manifest, transfer

SCRIPT = str(Path(transfer.__file__))


# --- how many streams, and what goes in each (pure) -------------------------------------------

@pytest.mark.parametrize(("how", "cpus", "link", "files", "want"), [
    ("ssh", [20, 20], 200_000, 30, 10),   # two Sparks: half the cores; the link would take 25
    ("tcp", [20, 20], 200_000, 30, 10),
    ("tcp", [20, 20], 10_000, 30, 2),     # a 10 Gb/s port: one plain stream fills it, two overlap
    ("ssh", [2, 2], 10_000, 30, 2),       # the simulated cluster
    ("ssh", [None, None], None, 30, 2),   # nothing known
    ("ssh", [20, 4], 200_000, 30, 2),     # the smaller node decides
    ("ssh", [72, 72], 400_000, 30, 16),   # never more than MAX_STREAMS
    ("ssh", [20, 20], 200_000, 3, 3),     # never more than the files
])
def test_stream_count_fills_the_link_within_the_cores(how, cpus, link, files, want):
    assert transport.stream_count(how, cpus, link, files) == want


def test_entries_resume_partial_files_and_streams_balance_bytes():
    manifest_doc = {"files": {"blobs/a": [100, "a" * 64], "blobs/b": [60, "b" * 64], "blobs/c": [50, "c" * 64],
                              "refs/main": [40, "d" * 64]},
                    "links": {"snapshots/r/x": "../../blobs/a"}}
    check = {"missing": ["blobs/a", "refs/main"], "wrong": ["blobs/c"], "partial": {"blobs/b": 20},
             "links": ["snapshots/r/x"]}
    files, links = transport.entries(manifest_doc, check)
    assert {f["rel"]: f["offset"] for f in files} == {"blobs/a": 0, "blobs/b": 20, "blobs/c": 0, "refs/main": 0}
    plan = transport.plan_streams(files, links, 2)
    loads = [sum(e["size"] - e["offset"] for e in s if "rel" in e) for s in plan]
    assert sorted(loads) == [100, 130] and sum(1 for s in plan for e in s if "link" in e) == 1
    assert "link" in plan[loads.index(100)][-1]  # the link rides with the lighter stream
    assert transport.plan_streams(files[:1], [], 8) == [[files[0]]]


# --- the processes, for real --------------------------------------------------------------------

def make_tree(root: Path) -> dict:
    (root / "blobs").mkdir(parents=True)
    (root / "snapshots" / "r").mkdir(parents=True)
    sizes = {"blobs/big": 9_000_000, "blobs/small": 70_000, "blobs/empty": 0}
    for rel, size in sizes.items():
        (root / rel).write_bytes(os.urandom(size))
    os.symlink("../../blobs/big", root / "snapshots" / "r" / "model.bin")
    return manifest.scan(str(root), None)


def job_for(src: Path, scan: dict, carrier: dict, offsets: dict | None = None, streams: int = 2) -> dict:
    check = {"missing": [r for r in scan["files"] if r not in (offsets or {})], "wrong": [],
             "partial": offsets or {}, "links": list(scan["links"])}
    files, links = transport.entries(scan, check)
    return {"root": str(src), "streams": transport.plan_streams(files, links, streams), "carrier": carrier,
            "every": 0.2}


def run_sender(job: dict) -> tuple[dict, list[int]]:
    proc = subprocess.Popen([sys.executable, SCRIPT, "send"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdin and proc.stdout
    proc.stdin.write(json.dumps(job) + "\n")
    proc.stdin.flush()
    progress = []
    for line in proc.stdout:
        doc = json.loads(line)
        if "result" in doc:
            break
        progress.append(doc["progress"])
    proc.stdin.close()
    proc.wait(10)
    return doc["result"], progress


def local_receiver(dest: Path, cache: Path) -> dict:
    """The ssh carrier without ssh: the same receiver command, started by the sender."""
    return {"kind": "ssh", "argv": [sys.executable, SCRIPT, "receive", str(dest), "--cache", str(cache)]}


def test_a_copy_is_verified_by_its_receiver_without_a_second_read(tmp_path):
    src, dest, cache = tmp_path / "src", tmp_path / "dest", tmp_path / "cache" / "m.sha256.json"
    scan = make_tree(src)
    result, progress = run_sender(job_for(src, scan, local_receiver(dest, cache)))
    assert result["sent"] == scan["bytes"] and progress[-1] == scan["bytes"]
    assert all(not s["problems"] and "error" not in s for s in result["streams"])
    for rel in scan["files"]:
        assert (dest / rel).read_bytes() == (src / rel).read_bytes()
    assert os.readlink(dest / "snapshots" / "r" / "model.bin") == "../../blobs/big"
    # The check that follows takes the receiver's hashes: it reads nothing, and agrees.
    after = manifest.check(str(dest), scan, str(cache))
    assert after["verified"] and after["hashed_bytes"] == 0
    assert not Path(str(cache) + manifest.JOURNAL).exists() and json.loads(cache.read_text())


def test_a_resumed_file_gets_its_tail_and_a_wrong_prefix_is_left_for_the_check(tmp_path):
    src, dest, cache = tmp_path / "src", tmp_path / "dest", tmp_path / "c.json"
    scan = make_tree(src)
    (dest / "blobs").mkdir(parents=True)
    (dest / "blobs" / "big").write_bytes((src / "blobs" / "big").read_bytes()[:4_000_000])
    (dest / "blobs" / "small").write_bytes(b"x" * 10)  # shorter than the offset we will claim
    result, _ = run_sender(job_for(src, scan, local_receiver(dest, cache),
                                   offsets={"blobs/big": 4_000_000, "blobs/small": 20_000}))
    assert result["sent"] == scan["bytes"] - 4_000_000 - 20_000
    problems = [p for s in result["streams"] for p in s["problems"]]
    assert problems == ["blobs/small: was 10 bytes, not the 20000 to resume from"]
    assert (dest / "blobs" / "big").read_bytes() == (src / "blobs" / "big").read_bytes()
    assert (dest / "blobs" / "small").read_bytes() == b"x" * 10  # untouched
    after = manifest.check(str(dest), scan, str(cache))
    assert after["partial"] == {"blobs/small": 10} and after["hashed_bytes"] == 0


def test_a_file_written_to_by_someone_else_meanwhile_is_not_taken_on_trust(tmp_path):
    """Another writer changes the file between two of the receiver's writes: the receiver says
    so and records no hash, so the check reads the file and finds it wrong."""
    payload = os.urandom(3 * transfer.BUFFER + 5)
    stream = (transfer.header({"rel": "blobs/f", "offset": 0, "size": len(payload)}) + payload
              + transfer.header({"end": True}))
    view, pos = memoryview(stream), [0]

    def read_into(buf):
        if pos[0] > transfer.BUFFER + 100 and not (tmp_path / "done").exists():
            # A second writer, a clock tick after our last write (file times are as coarse
            # as the kernel's tick: a write inside the same tick that keeps the size is the
            # one change this cannot see; `--full` can).
            time.sleep(0.02)
            with open(tmp_path / "blobs" / "f", "r+b") as other:
                other.write(b"intruder")
            (tmp_path / "done").touch()
        n = min(len(buf), len(stream) - pos[0], 65536)
        buf[:n] = view[pos[0]:pos[0] + n]
        pos[0] += n
        return n
    cache = tmp_path / "c.json"
    summary = transfer.Receiver(str(tmp_path), str(cache)).stream(read_into)
    assert summary["problems"] == ["blobs/f: changed by something else while it was written"]
    assert not Path(str(cache) + transfer.JOURNAL).exists()
    expected = {"files": {"blobs/f": [len(payload), hashlib.sha256(payload).hexdigest()]}, "links": {}}
    after = manifest.check(str(tmp_path), expected, str(cache))
    assert after["wrong"] == ["blobs/f"] and after["hashed_bytes"] == len(payload)


@pytest.mark.parametrize("entry", [{"rel": "../outside", "offset": 0, "size": 1},
                                   {"rel": "/etc/passwd", "offset": 0, "size": 1},
                                   {"link": "snapshots/x", "target": "../../../etc/passwd"}])
def test_nothing_is_written_outside_the_model_folder(tmp_path, entry):
    stream = transfer.header(entry) + b"x" + transfer.header({"end": True})
    with pytest.raises(ValueError, match="is not inside"):
        transfer.Receiver(str(tmp_path / "root"), None).stream(_reader(stream))
    assert sorted(p.name for p in tmp_path.rglob("*")) == []


def test_the_journal_is_folded_into_the_hash_cache_and_a_cut_line_is_ignored(tmp_path):
    (tmp_path / "f").write_bytes(b"hello")
    st = os.stat(tmp_path / "f")
    digest = hashlib.sha256(b"hello").hexdigest()
    cache = tmp_path / "c.json"
    Path(str(cache) + manifest.JOURNAL).write_text(
        json.dumps({"rel": "f", "entry": [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, digest]})
        + '\n{"rel": "g", "ent')
    result = manifest.check(str(tmp_path), {"files": {"f": [5, digest]}, "links": {}}, str(cache))
    assert result["verified"] and result["hashed_bytes"] == 0
    assert not Path(str(cache) + manifest.JOURNAL).exists() and "f" in json.loads(cache.read_text())


def test_tcp_listener_takes_only_answers_to_its_challenge_and_stops_with_its_stdin(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    scan = make_tree(src)
    secret = os.urandom(32).hex()
    listener = subprocess.Popen([sys.executable, SCRIPT, "listen", str(dest), "--address", "127.0.0.1",
                                 "--streams", "2"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert listener.stdin and listener.stdout
    try:
        listener.stdin.write(secret + "\n")
        listener.stdin.flush()
        port = json.loads(listener.stdout.readline())["port"]
        with socket.create_connection(("127.0.0.1", port)) as stranger:  # a wrong answer
            nonce = transfer.read_exact(stranger.recv_into, 32)
            stranger.sendall(hmac.new(b"guess", transfer.CONTEXT + nonce, hashlib.sha256).digest())
            try:
                stranger.sendall(transfer.header({"rel": "blobs/evil", "offset": 0, "size": 1}) + b"x")
                assert stranger.recv(100) == b""  # closed on us
            except ConnectionResetError:  # closed with our bytes unread: also "closed on us"
                pass
        result, _ = run_sender(job_for(src, scan, {"kind": "tcp", "address": "127.0.0.1", "port": port,
                                                    "secret": secret}))
        assert result["sent"] == scan["bytes"]
        summary = json.loads(listener.stdout.readline())["result"]
        assert summary["refused"] == 1 and len(summary["streams"]) == 2
        assert not (dest / "blobs" / "evil").exists()
        assert (dest / "blobs" / "big").read_bytes() == (src / "blobs" / "big").read_bytes()
    finally:
        listener.kill()
        listener.wait()
    # A second listener, its parent gone before anyone connects: it stops at once.
    other = subprocess.Popen([sys.executable, SCRIPT, "listen", str(dest), "--address", "127.0.0.1"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert other.stdin and other.stdout
    other.stdin.write(secret + "\n")
    other.stdin.flush()
    port = json.loads(other.stdout.readline())["port"]
    start = time.monotonic()
    other.stdin.close()
    assert other.wait(5) != 0 and time.monotonic() - start < 5
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def _reader(data: bytes):
    view, pos = memoryview(data), [0]

    def read_into(buf):
        n = min(len(buf), len(data) - pos[0])
        buf[:n] = view[pos[0]:pos[0] + n]
        pos[0] += n
        return n
    return read_into

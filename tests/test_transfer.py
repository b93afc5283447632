"""The copy engine of `inv sync` (node_scripts/transfer.py), run for real on this machine: the
sender and receiver as the processes they are on the nodes (a local receiver stands in for
the SSH hop), the TCP listener with its challenge, and the stream plan (pure)."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sparkops.models import sync, transport
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

def raw(entry: dict) -> bytes:
    """An untagged header frame (what the ssh transport carries), built here, not by the
    script under test."""
    body = json.dumps(entry).encode()
    return len(body).to_bytes(4, "big") + body


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
    stream = (raw({"rel": "blobs/f", "offset": 0, "size": len(payload)}) + payload
              + raw({"end": True}))
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


@pytest.mark.timing
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
            mine = os.urandom(32)
            stranger.sendall(mine + transfer._proof(b"guess", b"sender", nonce, mine))
            try:
                stranger.sendall(raw({"rel": "blobs/evil", "offset": 0, "size": 1}) + b"x")
                assert stranger.recv(100) == b""  # closed on us, and the listener proved nothing
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


# --- hostile streams: the receiver as the real script, fed frames by hand ----------------------
# Each case is refused with an error that names the entry or the frame, with no traceback;
# nothing outside the model folder changes; the file being written, if any, is gone.

MiB = transfer.BUFFER


def snapshot(top: Path, root: Path) -> dict[str, str]:
    """Everything under top but the model folder's contents: path -> a file's sha256, a link's
    target or 'dir'."""
    found = {}
    for here, dirs, names in os.walk(top):
        for name in dirs + names:
            path = Path(here) / name
            if root in path.parents:
                continue
            rel = str(path.relative_to(top))
            found[rel] = ("-> " + os.readlink(path) if path.is_symlink() else "dir" if path.is_dir()
                          else hashlib.sha256(path.read_bytes()).hexdigest())
    return found


@pytest.fixture
def place(tmp_path):
    """A model folder three levels down (so that a few '..' from inside it land in tmp_path, not
    in the rest of the machine), and a neighbour's folder beside it."""
    base = tmp_path / "home"
    root = base / "p2" / "p3" / "root"
    root.mkdir(parents=True)
    (base / "outside").mkdir()
    (base / "outside" / "keep.txt").write_text("the neighbour's")
    return base, root


def receive(root: Path, steps: list) -> tuple[int, dict, str]:
    """`transfer.py receive ROOT` (what SSH starts on a worker) fed the steps: bytes are written
    to its stdin, a callable is called (to wait, or to change the folder between two frames)."""
    proc = subprocess.Popen([sys.executable, SCRIPT, "receive", str(root)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin
    for step in steps:
        if callable(step):
            step()
            continue
        try:
            proc.stdin.write(step)
            proc.stdin.flush()
        except BrokenPipeError:  # it stopped reading: it refused something already
            break
    out, err = proc.communicate(timeout=60)
    lines = out.decode().strip().splitlines()
    return proc.returncode, json.loads(lines[-1]) if lines else {}, err.decode()


def until(cond, what: str) -> None:
    deadline = time.monotonic() + 20
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def refused(rc: int, said: dict, err: str, *expect: str) -> None:
    assert rc != 0, said
    for text in expect:
        assert text in said.get("error", ""), said
    assert "Traceback" not in err, err


def file_entry(rel: str, data: bytes, offset: int = 0) -> list[bytes]:
    return [raw({"rel": rel, "offset": offset, "size": len(data)}), data[offset:]]


END = raw({"end": True})


@pytest.mark.parametrize(("steps", "expect", "gone"), [
    # The issue's chain: each path lexically inside, the last two physically beside the folder
    # (the old receiver wrote outside/pwned.txt and reported success).
    ([*file_entry("d3/config.json", b"{}"), raw({"link": "d1/d2/d4/d5/L", "target": "../../../../d3"}),
      raw({"link": "d1/d2/d4/d5/L/M", "target": "../../../../outside"}),
      *file_entry("d1/d2/d4/d5/L/M/pwned.txt", b"pwned"), END],
     ["'d1/d2/d4/d5/L/M'", "'L' on its path is a symlink"], ["d3/M"]),
    # '..' after a name in a target: lexically a/, physically the folder's parent (old: written there).
    ([raw({"link": "a/b/L", "target": "../../a"}), raw({"link": "a/b/M", "target": "L/../.."}),
      *file_entry("a/b/M/pwned.txt", b"pwned"), END], ["link 'a/b/M' -> 'L/../..'"], ["a/b/M"]),
    # '..' after a name that stays inside: refused all the same (the old receiver made the link).
    ([raw({"link": "snapshots/r/x", "target": "../x/../../blobs/f"}), END], ["only '../' at the start"],
     ["snapshots/r/x"]),
    # More '..' than the link is deep (already refused before).
    ([raw({"link": "snapshots/x", "target": "../../../outside"}), END], ["leaves the model folder"],
     ["snapshots/x"]),
    # An absolute target (already refused before).
    ([raw({"link": "snapshots/x", "target": "/tmp"}), *file_entry("snapshots/x/pwned.txt", b"pwned"), END],
     ["an absolute target is refused"], ["snapshots/x"]),
    # '..' in a path, escaping (already refused before) or not (harmless before, refused now).
    ([*file_entry("../../../outside/pwned.txt", b"pwned"), END], ["'../../../outside/pwned.txt'"], []),
    ([*file_entry("blobs/../../outside/pwned.txt", b"pwned"), END], ["only a plain relative path"], []),
    ([*file_entry("blobs/../x", b"x"), END], ["only a plain relative path"], ["x"]),
    ([*file_entry("/etc/pwned.txt", b"pwned"), END], ["'/etc/pwned.txt'"], []),
])
def test_escaping_paths_and_links_are_refused_and_nothing_lands_outside(place, steps, expect, gone):
    base, root = place
    before = snapshot(base, root)
    refused(*receive(root, steps), *expect)
    assert snapshot(base, root) == before
    assert not any(os.path.lexists(root / rel) for rel in gone)


def test_a_directory_swapped_for_a_link_between_two_frames_is_not_followed(place):
    base, root = place

    def swap() -> None:  # what a second writer could do while the stream waits
        one = root / "snap" / "d" / "one"
        until(lambda: one.exists() and one.stat().st_size == 3, "the first file")
        (root / "snap" / "d").rename(root / "snap" / "was-d")
        (root / "snap" / "d").symlink_to(base / "outside")
    before = snapshot(base, root)
    rc, said, err = receive(root, [*file_entry("snap/d/one", b"one"), swap, *file_entry("snap/d/two", b"two"), END])
    refused(rc, said, err, "'snap/d/two'", "'d' on its path is a symlink")
    assert not (base / "outside" / "two").exists() and snapshot(base, root) == before


def test_a_link_swapped_for_a_directory_between_two_frames_keeps_the_file_inside(place):
    """The walk opens what is there now: a real directory, inside. (The old receiver, which
    wrote by path, also stayed inside here.)"""
    base, root = place
    before = snapshot(base, root)

    def swap() -> None:
        until(lambda: (root / "snap" / "L").is_symlink(), "the link")
        (root / "snap" / "L").unlink()
        (root / "snap" / "L").mkdir()
    rc, said, err = receive(root, [raw({"link": "snap/L", "target": "../blobs"}), swap,
                                   *file_entry("snap/L/f", b"data"), END])
    assert rc == 0 and said["files"] == 1 and "Traceback" not in err
    assert (root / "snap" / "L" / "f").read_bytes() == b"data" and not (root / "blobs").exists()
    assert snapshot(base, root) == before


@pytest.mark.parametrize(("steps", "expect"), [
    ([(1 << 31).to_bytes(4, "big")], "frame 0: a header of 2147483648 bytes (at most 65536)"),
    ([*file_entry("blobs/a", b"a"), (200).to_bytes(4, "big"), b'{"rel": "blobs/b", '],
     "frame 2: the stream ended 181 bytes short"),
    ([b"\x00\x00"], "frame 0: the stream ended 2 bytes short"),
])
def test_oversized_and_truncated_headers_are_refused_naming_the_frame(place, steps, expect):
    """An oversized length is refused before anything is allocated for it (the old receiver
    allocated the 2 GiB and waited for them); a cut header names its frame."""
    base, root = place
    before = snapshot(base, root)
    refused(*receive(root, steps), expect)
    assert snapshot(base, root) == before and not (root / "blobs" / "b").exists()


@pytest.mark.parametrize(("header", "expect"), [
    ({"rel": "blobs/x", "offset": "0", "size": 1}, "offset and size must be whole numbers"),
    ({"rel": "blobs/x", "offset": 0, "size": -1}, "offset and size must be whole numbers"),
    ({"rel": "blobs/x", "offset": 5, "size": 1}, "0 <= offset <= size"),
    ({"rel": "blobs/x", "offset": True, "size": 1}, "whole numbers"),
    ({"rel": "blobs/x", "offset": 0, "size": 1.5}, "whole numbers"),
    ({"rel": 7, "offset": 0, "size": 1}, "rel must be a non-empty string"),
    ({"rel": "blobs/x\u0000.txt", "offset": 0, "size": 1}, "without NUL"),
    ({"rel": "blobs/\udc80", "offset": 0, "size": 1}, "is not valid text"),
    ({"rel": "blobs/x", "offset": 0, "size": 1, "sha256": "abc"}, "64 lowercase hex digits"),
    ({"rel": "blobs/x", "offset": 0, "size": 1, "mode": "4755"}, "none of a file"),
    ({"link": "blobs/x", "target": ["../etc"]}, "target must be a non-empty string"),
    ({"link": "blobs/x"}, "none of a file"),
    ({"end": 1}, "'end' must be true"),
    (["rel", "blobs/x"], "not a JSON object"),
    ("not json", "not JSON"),
])
def test_a_header_with_wrong_fields_is_refused(place, header, expect):
    base, root = place
    body = header.encode() if isinstance(header, str) else json.dumps(header).encode()
    rc, said, err = receive(root, [len(body).to_bytes(4, "big") + body, b"x", END])
    refused(rc, said, err, "frame 0", expect)
    assert list(root.rglob("*")) == []


# --- over tcp: every frame tagged, both ends proven ----------------------------------------------

class Listening:
    """`transfer.py listen` (what sparkops starts on a worker for the tcp transport)."""

    def __init__(self, root: Path, streams: int = 1):
        self.secret = os.urandom(32).hex()
        self.proc = subprocess.Popen([sys.executable, SCRIPT, "listen", str(root), "--address", "127.0.0.1",
                                      "--streams", str(streams)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(self.secret + "\n")
        self.proc.stdin.flush()
        self.port = json.loads(self.proc.stdout.readline())["port"]

    def connect(self) -> tuple[socket.socket, transfer.Frames]:
        """A sender that knows the secret, by hand: the handshake, then frames as a test builds them."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=20)
        return sock, transfer.Frames(transfer._answer(sock, self.secret.encode(), "the listener"))

    def result(self) -> tuple[dict, str]:
        assert self.proc.stdout and self.proc.stdin
        line = self.proc.stdout.readline()
        self.proc.stdin.close()
        err = self.proc.stderr.read() if self.proc.stderr else ""
        self.proc.wait(10)
        return json.loads(line)["result"], err


def send_all(sock: socket.socket, parts: list[bytes]) -> bytes:
    """Writes the parts, then reads what comes back until the listener closes."""
    try:
        for part in parts:
            sock.sendall(part)
        sock.shutdown(socket.SHUT_WR)
        back = b""
        while chunk := sock.recv(65536):
            back += chunk
        return back
    except OSError:  # reset: it stopped reading, having refused something
        return b""
    finally:
        sock.close()


def data(frames: transfer.Frames, payload: bytes) -> list[bytes]:
    """Tagged data frames: 1 MiB each, the tag over the running sha256 (as the sender makes them)."""
    running, out = hashlib.sha256(), []
    for i in range(0, len(payload), MiB):
        running.update(payload[i:i + MiB])
        out.append(payload[i:i + MiB] + frames.tag(frames.next(), b"d", running.digest()))
    return out


def flip(frame: bytes, at: int = 100) -> bytes:
    return frame[:at] + bytes([frame[at] ^ 1]) + frame[at + 1:]


def test_tcp_frames_verify_and_a_sender_that_knows_the_secret_gets_a_tagged_summary(place):
    """The hand-made frames of the cases below are the real protocol: this stream is taken."""
    _, root = place
    listener = Listening(root)
    payload = os.urandom(2 * MiB + 7)
    sock, frames = listener.connect()
    back = send_all(sock, [frames.header({"rel": "blobs/f", "offset": 0, "size": len(payload)}),
                           *data(frames, payload), frames.header({"end": True})])
    summary = json.loads(frames.read_frame(transfer_reader(back), b"s"))
    assert summary["files"] == 1 and (root / "blobs" / "f").read_bytes() == payload
    result, err = listener.result()
    assert result["streams"] == [summary] and "Traceback" not in err


def transfer_reader(data: bytes):
    view, pos = memoryview(data), [0]

    def read_into(buf):
        n = min(len(buf), len(data) - pos[0])
        buf[:n] = view[pos[0]:pos[0] + n]
        pos[0] += n
        return n
    return read_into


def _wrong_chunk(frames):
    payload = os.urandom(3 * MiB)
    head = frames_header(frames, "blobs/f", 0, len(payload))
    chunks = data(frames, payload)
    return [head, chunks[0], flip(chunks[1]), chunks[2]], "frame 2: bad MAC"


def frames_header(frames: transfer.Frames, rel: str, offset: int, size: int) -> bytes:
    return frames.header({"rel": rel, "offset": offset, "size": size})


def _one_file(frames, mib):
    """A file of `mib` random MiB as a sender frames it: its header, then its data frames."""
    payload = os.urandom(mib * MiB)
    return frames_header(frames, "blobs/f", 0, len(payload)), data(frames, payload)


def _wrong_header(frames):
    first = frames.header({"link": "snapshots/r/x", "target": "../../blobs/f"})
    return [first, flip(frames.header({"rel": "blobs/f", "offset": 0, "size": 1}), 10), b"x"], "frame 1: bad MAC"


def _replayed_chunk(frames):
    head, chunks = _one_file(frames, 2)
    return [head, chunks[0], chunks[0]], "frame 2: bad MAC"


def _replayed_header(frames):
    first = frames.header({"link": "snapshots/r/x", "target": "../../blobs/f"})
    return [first, first], "frame 1: bad MAC"


def _dropped_chunk(frames):
    head, chunks = _one_file(frames, 3)
    return [head, chunks[0], chunks[2]], "frame 2: bad MAC"


def _reordered_chunks(frames):
    head, chunks = _one_file(frames, 3)
    return [head, chunks[0], chunks[2], chunks[1]], "frame 2: bad MAC"


def _dropped_header(frames):
    frames.header({"link": "snapshots/r/x", "target": "../../blobs/f"})  # made, never sent
    return [frames.header({"rel": "blobs/f", "offset": 0, "size": 1}), b"x"], "frame 0: bad MAC"


def _untagged_end(frames):
    return [frames.header({"link": "snapshots/r/x", "target": "../../blobs/f"}), raw({"end": True}) + b"\0" * 32], \
        "frame 1: bad MAC"


@pytest.mark.parametrize("case", [_wrong_chunk, _wrong_header, _replayed_chunk, _replayed_header, _dropped_chunk,
                                  _reordered_chunks, _dropped_header, _untagged_end])
def test_a_forged_replayed_dropped_or_reordered_tcp_frame_stops_the_stream(place, case):
    """What someone on the cable could inject after the handshake: refused at the frame, with
    nothing written from it and the file it was writing removed."""
    base, root = place
    before = snapshot(base, root)
    listener = Listening(root)
    sock, frames = listener.connect()
    parts, expect = case(frames)
    assert send_all(sock, parts) == b""  # no summary for a refused stream
    result, err = listener.result()
    assert expect in result["streams"][0]["error"] and "Traceback" not in err
    assert not (root / "blobs" / "f").exists()
    assert snapshot(base, root) == before


def test_a_bad_frame_in_a_resumed_file_cuts_it_back_to_where_it_was(place):
    _, root = place
    payload = os.urandom(3 * MiB)
    (root / "blobs").mkdir()
    (root / "blobs" / "f").write_bytes(payload[:MiB])
    listener = Listening(root)
    sock, frames = listener.connect()
    head = frames_header(frames, "blobs/f", MiB, len(payload))
    chunks = data(frames, payload[MiB:])  # the tags cover the tail only
    send_all(sock, [head, chunks[0], flip(chunks[1])])
    result, _ = listener.result()
    assert "frame 2: bad MAC" in result["streams"][0]["error"]
    assert (root / "blobs" / "f").read_bytes() == payload[:MiB]


def test_a_frame_from_another_connection_is_refused(place):
    """The key is the connection's (both nonces): a frame recorded on one does not verify on
    another, even of the same sync."""
    _, root = place
    listener = Listening(root, streams=2)
    first, frames = listener.connect()
    recorded = frames.header({"rel": "blobs/f", "offset": 0, "size": 1}) + data(frames, b"x")[0]
    end = frames.header({"end": True})
    send_all(first, [recorded, end])
    second, _ = listener.connect()
    send_all(second, [recorded, end])
    result, err = listener.result()
    assert sorted("error" in s for s in result["streams"]) == [False, True]
    assert "frame 0: bad MAC" in next(s["error"] for s in result["streams"] if "error" in s)
    assert "Traceback" not in err


def fake_receiver(answer) -> tuple[int, dict]:
    """A listener that is not sparkops' one: `answer(conn)` plays its side; what the sender sent
    after the handshake is kept in got['after'], set once the sender has closed (got['closed'])."""
    server = socket.create_server(("127.0.0.1", 0))
    got: dict = {"closed": threading.Event()}

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(20)
            answer(conn, got)
            after = b""
            try:
                while chunk := conn.recv(65536):
                    after += chunk
            except OSError:
                pass
            got["after"] = after
            got["closed"].set()
        server.close()
    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1], got


def test_the_sender_refuses_a_receiver_that_cannot_prove_it_knows_the_secret(tmp_path):
    src = tmp_path / "src"
    scan = make_tree(src)

    def impostor(conn, got) -> None:  # sends a nonce, takes the sender's proof, answers with noise
        conn.sendall(os.urandom(32))
        got["handshake"] = transfer.read_exact(conn.recv_into, 64)
        conn.sendall(os.urandom(32))
    port, got = fake_receiver(impostor)
    result, _ = run_sender(job_for(src, scan, {"kind": "tcp", "address": "127.0.0.1", "port": port,
                                               "secret": os.urandom(32).hex()}, streams=1))
    assert "cannot prove it knows this sync's secret" in result["streams"][0]["error"]
    # The sender has returned; the listener's thread may still be reading the end of the stream.
    assert got["closed"].wait(30)
    assert result["sent"] == 0 and got["after"] == b""  # not one byte of a header or a file
    why, fix = sync.copy_failure("tcp", result["streams"], "head", "w1", "127.0.0.1", port, "")
    assert why.startswith("the receiver at 127.0.0.1") and "--transport ssh" in fix


def test_the_sender_refuses_a_summary_with_a_bad_tag(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    scan = make_tree(src)
    secret = os.urandom(32).hex()

    def forger(conn, got) -> None:  # knows the secret, receives, then answers with a forged summary
        frames = transfer.Frames(transfer._challenge(conn, secret.encode()))
        summary = transfer.Receiver(str(dest), None).stream(conn.recv_into, frames)
        conn.sendall(flip(frames.frame(b"s", json.dumps(summary | {"files": 0}).encode()), 20))
        conn.shutdown(socket.SHUT_WR)
    port, _ = fake_receiver(forger)
    result, _ = run_sender(job_for(src, scan, {"kind": "tcp", "address": "127.0.0.1", "port": port,
                                               "secret": secret}, streams=1))
    assert "bad MAC" in result["streams"][0]["error"]
    why, fix = sync.copy_failure("tcp", result["streams"], "head", "w1", "127.0.0.1", port, "")
    assert why.startswith("frame ") and "changed or injected bytes" in fix and "--transport ssh" in fix


def test_an_entry_the_receiver_refuses_stops_the_copy_naming_it_and_the_fix(tmp_path):
    """A link the head's own scan takes (it resolves inside) but the receiver does not ('..'
    after a name): the sync names the link and says how to repair the head's copy."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_tree(src)
    os.symlink("../x/../../blobs/big", src / "snapshots" / "r" / "odd")
    scan = manifest.scan(str(src), None)
    assert not scan["problems"]
    result, _ = run_sender(job_for(src, scan, local_receiver(dest, tmp_path / "c.json"), streams=1))
    why, fix = sync.copy_failure("ssh", result["streams"], "head", "w1", "10.0.0.2", None,
                                 "--profile p --cluster c")
    assert why.startswith("link 'snapshots/r/odd' -> '../x/../../blobs/big'")
    assert "delete it on head and run `inv download --profile p --cluster c` again" in fix
    assert not any("Traceback" in line for line in result["streams"][0].get("log", []))
    assert not (dest / "snapshots" / "r" / "odd").exists() and not (tmp_path / "blobs").exists()

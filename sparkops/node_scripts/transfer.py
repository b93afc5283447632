"""Moves a model's files from the head to a worker and hashes each one as it is written, so a
copied file is verified when its last byte lands, without being read back. Stdlib only:
sparkops runs this very file on the nodes with `python3 -c`.

    send                                   the head: one JSON job line on stdin, then stdin is
                                           watched: its end means sparkops is gone, and every
                                           stream stops. Prints progress lines, then the result.
    receive ROOT --cache FILE              a worker, one stream on stdin (through SSH)
    listen ROOT --cache FILE --address A --streams N
                                           a worker, N streams over plain TCP on address A
                                           only: the first stdin line is the one-time secret,
                                           the end of stdin stops it at once

A stream is a series of frames. A header frame is a 4-byte length and JSON: a file
{rel, offset, size, sha256?}, followed by its bytes from `offset` to `size` in data frames of
1 MiB (the last one shorter); a link {link, target}; or {"end": true}, after which the receiver
answers with its summary. A file resumed at `offset` (an interrupted copy) has its prefix read
and hashed first.

Everything that arrives is hostile until checked. Each header is at most 64 KiB and holds
exactly the fields above, of the right types. Every path is walked beneath the model folder
from a descriptor of it, one component at a time, never following a symlink; a link's target
must stay inside the folder (see `_check_target`). A refused entry stops the stream with an
error naming it; the file it was writing is removed (a resumed one cut back to where it was).

Over TCP (`listen`) the receiver is reachable only on the given address and only for this
sync, and both ends prove they know the one-time secret, which travels on stdin (never argv)
and is never printed or written: the receiver sends a nonce, the sender its own nonce and an
HMAC of both under the secret, and the receiver, once satisfied, its own HMAC under another
label, which the sender checks before it sends anything. Both derive a key for this connection
from the secret and the two nonces; every frame then carries a tag under that key and its
sequence number (`Frames`), so nothing can be forged, dropped, replayed or moved, and nothing
is written before its tag is checked. The bytes are not encrypted. Over SSH the frames carry
no tag: SSH authenticates and encrypts the stream itself.

What was written is recorded for manifest.py's hash cache: a line per file appended to
`<cache>.received` with the file's key (size, mtime, ctime, inode, as fstat gave it after the
last write) and the sha256 of the bytes written. The `check` that follows finds the key
unchanged and does not read the file again. A file changed by anyone else while it was being
written (its size or times moved between two of our writes) is not recorded: `check` reads it.
"""
from __future__ import annotations

import argparse
import errno
import hashlib
import hmac
import json
import os
import queue
import re
import socket
import stat
import struct
import subprocess
import sys
import threading
import time

BUFFER = 1 << 20  # the data frame: one read, one hash update, one write
MAX_HEADER = 64 << 10
MAX_SUMMARY = 16 << 20  # the receiver's answer, with a line per problem
TAG = 32  # HMAC-SHA256
NONCE = 32
JOURNAL = ".received"  # manifest.py reads it (same name there)
CONTEXT = b"sparkops-sync-v2"
AUTH_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 120.0  # no byte for this long: the other side is gone
F_SETPIPE_SZ = 1031
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
MAX_SIZE = 1 << 62


class Refused(ValueError):
    """Input that breaks the rules (a path out of the folder, a bad header, a wrong tag): the
    stream stops, and the message names the entry or the frame."""


# --- frames ----------------------------------------------------------------------------------

class Frames:
    """One stream's frames, both ways, numbered from 0 in the order they travel. With a key
    (tcp) each frame ends in tag = HMAC-SHA256(key, seq || kind || payload); the key is this
    connection's, so a frame from another connection or another sync does not verify, and the
    number is counted on both sides, never sent, so a dropped, replayed or reordered frame does
    not either. Without a key (ssh) there are no tags: the same code, the MAC off.

    A data frame's tag covers not its bytes but the running sha256 of the entry's bytes so far
    (from its offset): the receiver hashes every byte anyway, for the journal, so an HMAC over
    the bytes themselves would make it hash each byte twice, and its sha256 is what limits a
    stream. HMAC over (seq, running digest) binds each chunk to all before it in the entry, the
    header that named the entry, and its place in the stream, for 64 bytes of HMAC input."""

    def __init__(self, key: bytes | None):
        self.key, self.seq = key, 0

    def next(self) -> int:
        seq, self.seq = self.seq, self.seq + 1
        return seq

    def tag(self, seq: int, kind: bytes, payload) -> bytes:
        if self.key is None:
            return b""
        mac = hmac.new(self.key, struct.pack(">Q", seq) + kind, hashlib.sha256)
        mac.update(payload)
        return mac.digest()

    def check(self, seq: int, kind: bytes, payload, tag: bytes) -> None:
        if self.key is not None and not hmac.compare_digest(tag, self.tag(seq, kind, payload)):
            raise Refused(f"frame {seq}: bad MAC")

    def frame(self, kind: bytes, body: bytes) -> bytes:
        """A header (b'h') or the summary (b's'): its length, the body, its tag."""
        head = struct.pack(">I", len(body)) + body
        return head + self.tag(self.next(), kind, head)

    def header(self, entry: dict) -> bytes:
        return self.frame(b"h", json.dumps(entry).encode())

    def read_frame(self, read_into, kind: bytes) -> bytes:
        seq, limit = self.next(), MAX_HEADER if kind == b"h" else MAX_SUMMARY
        try:
            prefix = read_exact(read_into, 4)
            (length,) = struct.unpack(">I", prefix)
            if length > limit:  # refused before anything is allocated for it
                raise Refused(f"frame {seq}: a header of {length} bytes (at most {limit})")
            body = read_exact(read_into, length)
            tag = read_exact(read_into, TAG) if self.key is not None else b""
        except EOFError as exc:
            raise EOFError(f"frame {seq}: {exc}") from None
        self.check(seq, kind, prefix + body, tag)
        return body

    def read_header(self, read_into) -> dict:
        seq = self.seq
        return parse_header(self.read_frame(read_into, b"h"), seq)


def read_exact(read_into, n: int) -> bytes:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = read_into(view[got:])
        if not k:
            raise EOFError(f"the stream ended {n - got} bytes short")
        got += k
    return bytes(buf)


def fill(read_into, view: memoryview, want: int) -> int:
    """Read until `want` bytes are in view (fewer only at the end of the stream): one hash
    update and one write per megabyte, whatever size the pipe or socket hands over."""
    got = 0
    while got < want:
        k = read_into(view[got:want])
        if not k:
            break
        got += k
    return got


def parse_header(body: bytes, seq: int) -> dict:
    """A header's JSON -> the entry, every field checked: exactly the fields of a file, a link
    or the end, of their types and ranges."""
    try:
        entry = json.loads(body)
    except ValueError:  # UnicodeDecodeError is one
        raise Refused(f"frame {seq}: the header is not JSON") from None
    if not isinstance(entry, dict):
        raise Refused(f"frame {seq}: the header is not a JSON object")
    keys = set(entry)
    name = entry.get("rel", entry.get("link"))
    where = f"frame {seq}" + (f" ({name[:200]!r})" if isinstance(name, str) else "")
    if keys == {"end"}:
        if entry["end"] is not True:
            raise Refused(f"{where}: 'end' must be true")
    elif keys in ({"rel", "offset", "size"}, {"rel", "offset", "size", "sha256"}):
        _text(entry["rel"], seq, "rel")
        offset, size = entry["offset"], entry["size"]
        if not (type(offset) is int and type(size) is int and 0 <= offset <= size <= MAX_SIZE):
            raise Refused(f"{where}: offset and size must be whole numbers with 0 <= offset <= size, "
                          f"not {offset!r} and {size!r}")
        if "sha256" in entry and not (isinstance(entry["sha256"], str) and SHA256_HEX.fullmatch(entry["sha256"])):
            raise Refused(f"{where}: sha256 must be 64 lowercase hex digits")
    elif keys == {"link", "target"}:
        _text(entry["link"], seq, "link")
        _text(entry["target"], seq, "target")
    else:
        raise Refused(f"{where}: a header with the fields {sorted(keys)[:8]}, which is none of a file "
                      "{rel, offset, size, sha256}, a link {link, target} or the end {end}")
    return entry


def _text(value, seq: int, field: str) -> None:
    if not isinstance(value, str) or not value or "\0" in value or len(value) > 4096:
        raise Refused(f"frame {seq}: {field} must be a non-empty string without NUL, "
                      f"not {str(value)[:100]!r}")
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate: no file name can hold it
        raise Refused(f"frame {seq}: {field} {value[:100]!r} is not valid text") from None


# --- paths beneath the folder ---------------------------------------------------------------

def _parts(rel: str) -> list[str]:
    """rel's components; refused unless it is relative and plain (no '', '.', '..')."""
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise Refused(f"entry {rel!r}: only a plain relative path is taken (no leading '/', "
                      "no '.', '..' or empty components)")
    return parts


def _check_target(link: str, parts: list[str], target: str) -> None:
    """A link's target stays inside the folder if it is `../` at most as many times as the
    link is deep (the directories it sits in), and only at its start, then plain names.
    Why that is enough: every directory on the link's own path was opened without following a
    link (`_open_dir`), so they are real directories inside the folder, and their '..' are
    their real parents: the leading '..'s end at one of them, or at the folder itself. From
    there the plain names go down; a name that is a link is one of ours, checked by this same
    rule when it was made, so it stays inside too (the kernel's limit on nested links bounds
    that argument). Hugging Face's `snapshots/<rev>/x -> ../../blobs/<sha256>` is of this form."""
    names = target.split("/")
    ups = next((i for i, p in enumerate(names) if p != ".."), len(names))
    if target.startswith("/"):
        raise Refused(f"link {link!r} -> {target!r}: an absolute target is refused")
    if ups > len(parts) - 1:
        raise Refused(f"link {link!r} -> {target!r}: the target leaves the model folder")
    if any(p in ("", ".", "..") for p in names[ups:]):
        raise Refused(f"link {link!r} -> {target!r}: only '../' at the start and then plain names "
                      "are taken in a target")
    if ups == len(names):
        raise Refused(f"link {link!r} -> {target!r}: a target must end in a name")


def _open_dir(root_fd: int, parts: list[str], entry: str) -> int:
    """A descriptor of root/parts..., walked one component at a time from the folder's own
    descriptor: each made when missing, and opened with O_NOFOLLOW, so a component that is a
    symlink (to anywhere) stops the entry instead of leading out."""
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root_fd)
    try:
        for name in parts:
            nxt = _step(fd, name, entry)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _step(dir_fd: int, name: str, entry: str) -> int:
    for _ in range(3):
        try:
            return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            try:
                os.mkdir(name, 0o755, dir_fd=dir_fd)
            except FileExistsError:  # another stream made it meanwhile
                pass
        except OSError as exc:
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            what = "a symlink" if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode) \
                else "not a directory"
            raise Refused(f"entry {entry!r}: {name!r} on its path is {what}; "
                          "links inside the model folder are never followed") from None
    raise FileNotFoundError(errno.ENOENT, f"{name!r} keeps vanishing", entry)


# --- the receiving side --------------------------------------------------------------------

def _key(st: os.stat_result) -> list:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class Receiver:
    """Writes the entries of streams into root, never outside it; thread-safe across streams."""

    def __init__(self, root: str, cache: str | None):
        self.root, self.lock = root, threading.Lock()
        self.journal = cache + JOURNAL if cache else None
        if self.journal:
            os.makedirs(os.path.dirname(self.journal) or ".", exist_ok=True)
        os.makedirs(root, exist_ok=True)  # the folder itself is sparkops' own path: trusted
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def stream(self, read_into, frames: Frames | None = None) -> dict:
        """Receive one stream to its end frame -> its summary."""
        frames = frames or Frames(None)
        bufs = [bytearray(BUFFER + TAG) for _ in range(4)]
        done: dict = {"files": 0, "bytes": 0, "hashed": 0, "links": 0, "problems": []}
        while True:
            entry = frames.read_header(read_into)
            if "end" in entry:
                return done
            if "link" in entry:
                self._link(entry)
                done["links"] += 1
                continue
            problem = self._file(entry, read_into, frames, bufs)
            done["files"] += 1
            done["bytes"] += entry["size"] - entry["offset"]
            done["hashed"] += entry["size"] if not problem else 0
            if problem:
                done["problems"].append(problem)

    def _link(self, entry: dict) -> None:
        link, target = entry["link"], entry["target"]
        parts = _parts(link)
        _check_target(link, parts, target)
        parent = _open_dir(self.root_fd, parts[:-1], link)
        try:
            try:
                there = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                there = None
            if there is not None and stat.S_ISDIR(there.st_mode):
                raise Refused(f"link {link!r}: a directory is there")
            if there is not None:
                os.unlink(parts[-1], dir_fd=parent)  # a wrong link or a file: never followed
            os.symlink(target, parts[-1], dir_fd=parent)
        finally:
            os.close(parent)

    def _file(self, entry: dict, read_into, frames: Frames, bufs: list[bytearray]) -> str | None:
        rel, offset, size = entry["rel"], entry["offset"], entry["size"]
        parts = _parts(rel)
        parent = _open_dir(self.root_fd, parts[:-1], rel)
        try:
            fd = _open_file(parent, parts[-1], rel, offset)
            try:
                st = os.fstat(fd)
                if st.st_size != offset:  # a resumed file must still be the prefix we were told
                    # Keep the stream in step; the check after the copy redoes this file.
                    _land(None, read_into, frames, offset, size - offset, hashlib.sha256(), bufs, rel)
                    return f"{rel}: was {st.st_size} bytes, not the {offset} to resume from"
                digest = hashlib.sha256()
                if offset:
                    _hash_prefix(fd, offset, digest, bufs[0], rel)
                    os.lseek(fd, offset, os.SEEK_SET)
                try:
                    touched = _land(fd, read_into, frames, offset, size - offset, digest, bufs, rel)
                except Refused:  # what this entry wrote goes: a fresh file, or a resumed one's tail
                    if offset:
                        os.ftruncate(fd, offset)
                    else:
                        os.unlink(parts[-1], dir_fd=parent)
                    raise
                final = os.fstat(fd)
            finally:
                os.close(fd)
        finally:
            os.close(parent)
        sha = digest.hexdigest()
        if touched or final.st_size != size:
            return f"{rel}: changed by something else while it was written"
        if self.journal:
            line = json.dumps({"rel": rel, "entry": [*_key(final), sha]}) + "\n"
            with self.lock:
                jfd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(jfd, line.encode())
                finally:
                    os.close(jfd)
        if entry.get("sha256") and sha != entry["sha256"]:
            return f"{rel}: sha256 of what arrived is {sha[:12]}..., not the head's {entry['sha256'][:12]}..."
        return None


def _open_file(parent: int, name: str, rel: str, offset: int) -> int:
    """The entry's file in its directory, opened with O_NOFOLLOW: a symlink where the file
    belongs is replaced (the link itself, never what it points to)."""
    flags = (os.O_RDWR if offset else os.O_WRONLY | os.O_TRUNC) | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(2):
        try:
            return os.open(name, flags, 0o644, dir_fd=parent)
        except IsADirectoryError:
            raise Refused(f"entry {rel!r}: a directory is there") from None
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            os.unlink(name, dir_fd=parent)
    raise Refused(f"entry {rel!r}: a symlink keeps coming back where the file belongs")


def _hash_prefix(fd: int, length: int, digest, buf: bytearray, rel: str) -> None:
    view, pos = memoryview(buf)[:BUFFER], 0
    while pos < length:
        n = os.preadv(fd, [view[:min(BUFFER, length - pos)]], pos)
        if not n:
            raise EOFError(f"{rel} shrank while its prefix was read")
        digest.update(view[:n])
        pos += n


def _land(fd: int | None, read_into, frames: Frames, offset: int, count: int, digest,
          bufs: list[bytearray], rel: str) -> bool:
    """`count` bytes of the stream (the entry's from `offset`) into fd (None: read, check and
    drop them), hashed into `digest` on the way -> whether anything else wrote to the file
    meanwhile. Three threads in a chain: this one reads the next data frame while one hashes
    the one before and checks its tag, and one writes the one before that, so a stream goes at
    the speed of its slowest part, the sha256, not of their sum (hashlib and the system calls
    release the GIL). Nothing is written before its tag is checked. The tags cover the running
    sha256 of the entry's bytes from its offset: for a fresh file that is `digest` itself, for
    a resumed one (whose digest started with the prefix on disk) a second one, of the tail."""
    tagged = frames.key is not None
    running = hashlib.sha256() if tagged and offset and fd is not None else digest
    extra = TAG if tagged else 0
    free: queue.Queue = queue.Queue()
    for buf in bufs:
        free.put(buf)
    to_hash: queue.Queue = queue.Queue()
    to_write: queue.Queue = queue.Queue()
    state: dict = {"touched": False, "error": None}
    first = os.fstat(fd) if fd is not None else None  # before any byte is read: a change from here on is someone else's

    def hash_all() -> None:
        while (item := to_hash.get()) is not None:
            buf, n, seq, pos = item
            if state["error"] is None:
                try:
                    view = memoryview(buf)[:n]
                    digest.update(view)
                    if running is not digest:
                        running.update(view)
                    frames.check(seq, b"d", running.digest(), bytes(buf[n:n + extra]))
                except Refused as exc:
                    state["error"] = Refused(f"{exc} (data of {rel!r} from byte {pos})")
                except BaseException as exc:  # reported by the reading thread
                    state["error"] = exc
                else:
                    to_write.put((buf, n))
                    continue
            free.put(buf)
        to_write.put(None)

    def write_all() -> None:
        last: os.stat_result | None = first
        while (item := to_write.get()) is not None:
            buf, n = item
            if state["error"] is None and fd is not None:
                try:
                    view = memoryview(buf)[:n]
                    now = os.fstat(fd)  # anyone else's write since our last one moves these
                    state["touched"] |= last is not None and _key(now)[:3] != _key(last)[:3]
                    while view:
                        view = view[os.write(fd, view):]
                    last = os.fstat(fd)
                except BaseException as exc:
                    state["error"] = exc
            free.put(buf)
    threads = [threading.Thread(target=fn, daemon=True) for fn in (hash_all, write_all)]
    for thread in threads:
        thread.start()
    ended: EOFError | None = None
    try:
        pos = offset
        while count and state["error"] is None:
            buf = free.get()
            want = min(BUFFER, count)
            n = fill(read_into, memoryview(buf), want + extra)
            if n == want + extra or (n and not tagged):  # untagged: what came before the end lands
                to_hash.put((buf, min(n, want), frames.next(), pos))
            else:
                free.put(buf)
            if n < want + extra:
                ended = EOFError(f"the stream ended inside {rel}, {count - min(n, want)} bytes short")
                break
            count, pos = count - want, pos + want
    finally:
        to_hash.put(None)
        for thread in threads:
            thread.join()
    if state["error"] is not None:
        raise state["error"]
    if ended is not None:
        raise ended
    return state["touched"]


def receive(root: str, cache: str | None) -> dict:
    """One stream on stdin (through SSH): untagged frames; the summary goes to stdout."""
    stdin = sys.stdin.buffer.raw  # type: ignore[union-attr]
    try:  # a larger pipe: fewer, larger reads (64 KiB by default, 1 MiB allowed unprivileged)
        import fcntl
        fcntl.fcntl(stdin.fileno(), F_SETPIPE_SZ, BUFFER)
    except (OSError, ImportError):
        pass
    receiver = Receiver(root, cache)
    return receiver.stream(stdin.readinto)


def listen(root: str, cache: str | None, address: str, streams: int) -> dict:
    secret = sys.stdin.buffer.readline().strip()
    if len(secret) < 32:
        raise SystemExit("listen: no secret on stdin")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    server = socket.create_server((address, 0), family=family, backlog=streams + 4)
    server.settimeout(IDLE_TIMEOUT_S)
    _say({"port": server.getsockname()[1]})
    _exit_when_stdin_ends(lambda: None)
    receiver, refused = Receiver(root, cache), 0
    results: list[dict] = []
    threads: list[threading.Thread] = []
    while len(threads) < streams:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            return {"error": f"no connection from the head within {IDLE_TIMEOUT_S:.0f}s on "
                             f"{address}:{server.getsockname()[1]}", "refused": refused}
        key = _challenge(conn, secret)
        if key is None:
            refused += 1
            conn.close()
            continue
        thread = threading.Thread(target=_serve, args=(receiver, conn, key, results), daemon=True)
        thread.start()
        threads.append(thread)
    server.close()  # nothing more is accepted
    for thread in threads:
        thread.join()
    return {"streams": results, "refused": refused}


def _proof(secret: bytes, label: bytes, receiver_nonce: bytes, sender_nonce: bytes) -> bytes:
    """HMAC-SHA256 under the secret of a label and both nonces: the sender's proof, the
    receiver's, or the connection's key, each under its own label, so none can stand for another
    (a receiver cannot hand the sender's proof back as its own)."""
    return hmac.new(secret, CONTEXT + b" " + label + b"\0" + receiver_nonce + sender_nonce, hashlib.sha256).digest()


def _challenge(conn: socket.socket, secret: bytes) -> bytes | None:
    """The receiver's side of the handshake -> this connection's key, or None: the other end
    does not know the secret (it learns nothing: the receiver proves itself only after)."""
    ours = os.urandom(NONCE)
    conn.settimeout(AUTH_TIMEOUT_S)
    try:
        conn.sendall(ours)
        got = read_exact(conn.recv_into, NONCE + TAG)
        theirs, proof = got[:NONCE], got[NONCE:]
        if not hmac.compare_digest(proof, _proof(secret, b"sender", ours, theirs)):
            return None
        conn.sendall(_proof(secret, b"receiver", ours, theirs))
    except (OSError, EOFError):
        return None
    return _proof(secret, b"key", ours, theirs)


def _answer(sock: socket.socket, secret: bytes, where: str) -> bytes:
    """The sender's side -> this connection's key; refused unless the receiver proves that it
    knows the secret too (else it is not our listener, and gets no byte of the model)."""
    theirs = read_exact(sock.recv_into, NONCE)
    ours = os.urandom(NONCE)
    sock.sendall(ours + _proof(secret, b"sender", theirs, ours))
    try:
        proof = read_exact(sock.recv_into, TAG)
    except EOFError:
        raise Refused(f"the receiver at {where} closed the connection at the handshake") from None
    if not hmac.compare_digest(proof, _proof(secret, b"receiver", theirs, ours)):
        raise Refused(f"the receiver at {where} cannot prove it knows this sync's secret: "
                      "not sparkops' listener; nothing was sent")
    return _proof(secret, b"key", theirs, ours)


def _serve(receiver: Receiver, conn: socket.socket, key: bytes, results: list) -> None:
    conn.settimeout(IDLE_TIMEOUT_S)
    frames = Frames(key)
    try:
        summary = receiver.stream(conn.recv_into, frames)
        conn.sendall(frames.frame(b"s", json.dumps(summary).encode()))
    except Exception as exc:  # this stream's result: the listener reports every one
        summary = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        conn.close()
    results.append(summary)


# --- the sending side ----------------------------------------------------------------------

class Sender:
    """Runs the job's streams in parallel, counting the bytes each has sent."""

    def __init__(self, job: dict):
        self.job = job
        self.sent = [0] * len(job["streams"])
        self.results: list[dict] = [{} for _ in job["streams"]]
        self.procs: list[subprocess.Popen] = []
        self.socks: list[socket.socket] = []

    def run(self) -> dict:
        threads = [threading.Thread(target=self._stream, args=(i,), daemon=True)
                   for i in range(len(self.job["streams"]))]
        for thread in threads:
            thread.start()
        every, start = self.job.get("every", 1.0), time.monotonic()
        for thread in threads:
            while thread.is_alive():
                thread.join(every - (time.monotonic() - start) % every)
                _say({"progress": sum(self.sent)})
        return {"sent": sum(self.sent), "streams": self.results}

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
        for sock in self.socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _stream(self, index: int) -> None:
        try:
            carrier = self.job["carrier"]
            if carrier["kind"] == "ssh":
                self.results[index] = self._over_ssh(index, carrier["argv"])
            else:
                self.results[index] = self._over_tcp(index, carrier)
        except Exception as exc:  # reported per stream: sparkops names the stream and the fix
            self.results[index] = {"error": f"{type(exc).__name__}: {exc}"}

    def _entries(self, index: int, frames: Frames, write, write_file) -> None:
        root = self.job["root"]
        for entry in self.job["streams"][index]:
            write(frames.header(entry))
            if "rel" in entry:
                with open(os.path.join(root, entry["rel"]), "rb") as handle:
                    if os.fstat(handle.fileno()).st_size != entry["size"]:
                        raise ValueError(f"{entry['rel']} changed size on the head during the sync")
                    write_file(handle, entry["offset"], entry["size"] - entry["offset"])
        write(frames.header({"end": True}))

    def _over_ssh(self, index: int, argv: list[str]) -> dict:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.procs.append(proc)
        assert proc.stdin and proc.stdout and proc.stderr
        err: list[bytes] = []
        drain = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
        drain.start()
        out = proc.stdin.fileno()

        def write(data: bytes) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(out, view):]

        def write_file(handle, offset: int, count: int) -> None:
            while count:
                n = os.sendfile(out, handle.fileno(), offset, min(count, 8 << 20))
                if not n:
                    raise EOFError("file ended early on the head")
                offset, count = offset + n, count - n
                self.sent[index] += n
        try:
            self._entries(index, Frames(None), write, write_file)
        except BrokenPipeError:
            pass  # the receiver ended: its exit status and stderr say why
        finally:
            proc.stdin.close()
        reply = proc.stdout.read()
        rc = proc.wait()
        drain.join()
        if rc != 0:
            tail = b"".join(err).decode(errors="replace").strip().splitlines()[-15:]
            said = reply.decode(errors="replace").strip().splitlines()[-1:]  # the receiver's own error line
            why = json.loads(said[0]).get("error", "") if said and said[0].startswith("{") else ""
            return {"error": f"ssh/receiver exited {rc}" + (f": {why}" if why else ""), "log": tail}
        return json.loads(reply)

    def _over_tcp(self, index: int, carrier: dict) -> dict:
        where = f"{carrier['address']}:{carrier['port']}"
        sock = socket.create_connection((carrier["address"], carrier["port"]), timeout=30)
        self.socks.append(sock)
        with sock:
            sock.settimeout(AUTH_TIMEOUT_S)
            frames = Frames(_answer(sock, carrier["secret"].encode(), where))
            sock.settimeout(IDLE_TIMEOUT_S)

            def write_file(handle, offset: int, count: int) -> None:
                _send_tagged(sock.sendall, handle.fileno(), offset, count, frames, self.sent, index)
            self._entries(index, frames, sock.sendall, write_file)
            sock.shutdown(socket.SHUT_WR)
            try:
                reply = frames.read_frame(sock.recv_into, b"s")
            except EOFError:
                return {"error": "the receiver closed the connection without a summary"}
        summary = json.loads(reply)
        if not isinstance(summary, dict):
            raise Refused("the receiver's summary is not a JSON object")
        return summary


def _send_tagged(send, fd: int, offset: int, count: int, frames: Frames, sent: list[int], index: int) -> None:
    """A file's bytes from offset as tagged data frames: each 1 MiB read once, hashed into the
    running sha256 its tag covers, and sent with the tag appended (no sendfile: the bytes have
    to pass through the hash). A thread reads and hashes the next frames while this one sends."""
    running = hashlib.sha256()
    free: queue.Queue = queue.Queue()
    ready: queue.Queue = queue.Queue()
    for _ in range(3):
        free.put(bytearray(BUFFER + TAG))
    state: dict = {"stop": False, "error": None}

    def produce() -> None:
        pos, left = offset, count
        try:
            while left:
                buf = free.get()
                if state["stop"]:
                    return
                want, view, got = min(BUFFER, left), memoryview(buf), 0
                while got < want:
                    k = os.preadv(fd, [view[got:want]], pos + got)
                    if not k:
                        raise EOFError("file ended early on the head")
                    got += k
                running.update(view[:want])
                buf[want:want + TAG] = frames.tag(frames.next(), b"d", running.digest())
                ready.put((buf, want))
                pos, left = pos + want, left - want
        except BaseException as exc:
            state["error"] = exc
        finally:
            ready.put(None)
    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not None:
            buf, n = item
            send(memoryview(buf)[:n + TAG])
            sent[index] += n
            free.put(buf)
    finally:
        state["stop"] = True
        free.put(bytearray(BUFFER + TAG))  # wakes the reader if it waits for a buffer
        thread.join()
    if state["error"] is not None:
        raise state["error"]


def send() -> dict:
    job = json.loads(sys.stdin.buffer.readline())
    sender = Sender(job)
    _exit_when_stdin_ends(sender.stop)
    return sender.run()


# --- common ----------------------------------------------------------------------------------

_print_lock = threading.Lock()


def _say(doc: dict) -> None:
    with _print_lock:
        sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()


def _exit_when_stdin_ends(cleanup) -> None:
    """The end of stdin means sparkops is gone (or done with us): stop now, whatever runs."""
    def watch() -> None:
        while sys.stdin.buffer.read1(65536):  # type: ignore[union-attr]
            pass
        cleanup()
        os._exit(3)
    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sparkops-transfer")
    parser.add_argument("command", choices=["send", "receive", "listen"])
    parser.add_argument("root", nargs="?")
    parser.add_argument("--cache", help="hash cache file of this node")
    parser.add_argument("--address", help="listen: the only address to accept connections on")
    parser.add_argument("--streams", type=int, default=1, help="listen: connections to accept")
    args = parser.parse_args(argv)
    root = os.path.expanduser(args.root) if args.root else ""
    cache = os.path.expanduser(args.cache) if args.cache else None
    try:
        if args.command == "send":
            result = send()
        elif args.command == "receive":
            result = receive(root, cache)
        else:
            result = listen(root, cache, args.address, args.streams)
    except Exception as exc:  # one JSON line that sparkops turns into an error naming the node
        _say({"error": f"{args.command}: {type(exc).__name__}: {exc}"})
        sys.stdout.flush()
        os._exit(1)
    if args.command == "receive":
        _say(result)
        return 0
    _say({"result": result})
    os._exit(0)  # not a normal exit: the stdin watcher thread would trip the interpreter's shutdown


if __name__ == "__main__":
    sys.exit(main())

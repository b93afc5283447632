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

A stream is a series of entries, each a header (4-byte length, then JSON) and, for a file, its
bytes from `offset` to `size`; {"end": true} closes it and the receiver answers with one JSON
line. A file resumed at `offset` (an interrupted copy) has its prefix read and hashed first.

What was written is recorded for manifest.py's hash cache: a line per file appended to
`<cache>.received` with the file's key (size, mtime, ctime, inode, as fstat gave it after the
last write) and the sha256 of the bytes written. The `check` that follows finds the key
unchanged and does not read the file again. A file changed by anyone else while it was being
written (its size or times moved between two of our writes) is not recorded: `check` reads it.

Over TCP the receiver is reachable only on the given address and only for this sync: each
connection must answer a random challenge with HMAC-SHA256 under the secret, which travels
on stdin (never argv) and is never printed or written.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
import time

BUFFER = 1 << 20
JOURNAL = ".received"  # manifest.py reads it (same name there)
CONTEXT = b"sparkops-sync-v1"
AUTH_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 120.0  # no byte for this long: the other side is gone
F_SETPIPE_SZ = 1031


# --- the stream format -------------------------------------------------------------------

def header(entry: dict) -> bytes:
    body = json.dumps(entry).encode()
    return struct.pack(">I", len(body)) + body


def read_exact(read_into, n: int) -> bytes:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = read_into(view[got:])
        if not k:
            raise EOFError(f"stream ended {n - got} bytes short")
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


def read_header(read_into) -> dict:
    (length,) = struct.unpack(">I", read_exact(read_into, 4))
    return json.loads(read_exact(read_into, length))


# --- the receiving side --------------------------------------------------------------------

def inside(root: str, rel: str) -> str:
    path = os.path.normpath(os.path.join(root, rel))
    if os.path.isabs(rel) or not path.startswith(os.path.normpath(root) + os.sep):
        raise ValueError(f"{rel!r} is not inside {root}")
    return path


def _key(st: os.stat_result) -> list:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class Receiver:
    """Writes the entries of streams into root; thread-safe across streams."""

    def __init__(self, root: str, cache: str | None):
        self.root, self.lock = root, threading.Lock()
        self.journal = cache + JOURNAL if cache else None
        if self.journal:
            os.makedirs(os.path.dirname(self.journal) or ".", exist_ok=True)

    def stream(self, read_into) -> dict:
        """Receive one stream to its end frame -> its summary."""
        bufs = [bytearray(BUFFER) for _ in range(4)]
        done: dict = {"files": 0, "bytes": 0, "hashed": 0, "links": 0, "problems": []}
        while True:
            entry = read_header(read_into)
            if entry.get("end"):
                return done
            if "link" in entry:
                self._link(entry)
                done["links"] += 1
                continue
            problem = self._file(entry, read_into, bufs)
            done["files"] += 1
            done["bytes"] += entry["size"] - entry["offset"]
            done["hashed"] += entry["size"] if not problem else 0
            if problem:
                done["problems"].append(problem)

    def _link(self, entry: dict) -> None:
        path, target = inside(self.root, entry["link"]), entry["target"]
        inside(self.root, os.path.join(os.path.dirname(entry["link"]), target))  # stays in root
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.lexists(path) and not (os.path.isdir(path) and not os.path.islink(path)):
            os.unlink(path)
        os.symlink(target, path)

    def _file(self, entry: dict, read_into, bufs: list[bytearray]) -> str | None:
        rel, offset, size = entry["rel"], entry["offset"], entry["size"]
        path = inside(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.islink(path):
            os.unlink(path)
        digest = hashlib.sha256()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | (0 if offset else os.O_TRUNC), 0o644)
        try:
            st = os.fstat(fd)
            fits = st.st_size == offset  # a resumed file must still be the prefix we were told
            touched = False
            if not fits:  # keep the stream in step; the check after the copy redoes this file
                _skip(read_into, memoryview(bufs[0]), size - offset, rel)
            else:
                if offset:
                    self._hash_prefix(path, offset, digest, bufs[0])
                os.lseek(fd, offset, os.SEEK_SET)
                touched = _land(fd, read_into, size - offset, digest, bufs, rel)
            final = os.fstat(fd)
        finally:
            os.close(fd)
        if not fits:
            return f"{rel}: was {st.st_size} bytes, not the {offset} to resume from"
        sha = digest.hexdigest()
        if touched or final.st_size != size:
            return f"{rel}: changed by something else while it was written"
        if self.journal:
            line = json.dumps({"rel": rel, "entry": [*_key(final), sha]}) + "\n"
            with self.lock:
                fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, line.encode())
                finally:
                    os.close(fd)
        if entry.get("sha256") and sha != entry["sha256"]:
            return f"{rel}: sha256 of what arrived is {sha[:12]}..., not the head's {entry['sha256'][:12]}..."
        return None

    @staticmethod
    def _hash_prefix(path: str, length: int, digest, buf: bytearray) -> None:
        view = memoryview(buf)
        with open(path, "rb", buffering=0) as handle:
            while length:
                n = handle.readinto(view[:min(len(buf), length)])
                if not n:
                    raise EOFError(f"{path} shrank while its prefix was read")
                digest.update(view[:n])
                length -= n


def _land(fd: int, read_into, count: int, digest, bufs: list[bytearray], rel: str) -> bool:
    """`count` bytes of the stream into fd, hashed on the way -> whether anything else wrote to
    the file meanwhile. Three threads share the work: this one reads the next megabyte while
    one hashes and one writes those before it (hashlib and the system calls release the GIL),
    so a stream goes at the speed of its slowest part, the sha256, not of their sum."""
    free: queue.Queue = queue.Queue()
    for buf in bufs:
        free.put(buf)
    users: dict[int, int] = {}  # buffer -> the threads still using it
    lock = threading.Lock()
    state: dict = {"touched": False, "error": None}
    first = os.fstat(fd)  # before any byte is read: a change from here on is someone else's

    def release(buf: bytearray) -> None:
        with lock:
            users[id(buf)] -= 1
            if not users[id(buf)]:
                free.put(buf)

    def hash_all(work: queue.Queue) -> None:
        while (item := work.get()) is not None:
            try:
                if state["error"] is None:
                    digest.update(memoryview(item[0])[:item[1]])
            except BaseException as exc:  # reported by the reading thread
                state["error"] = exc
            release(item[0])

    def write_all(work: queue.Queue) -> None:
        last = first
        while (item := work.get()) is not None:
            try:
                if state["error"] is None:
                    view = memoryview(item[0])[:item[1]]
                    now = os.fstat(fd)  # anyone else's write since our last one moves these
                    state["touched"] |= _key(now)[:3] != _key(last)[:3]
                    while view:
                        view = view[os.write(fd, view):]
                    last = os.fstat(fd)
            except BaseException as exc:
                state["error"] = exc
            release(item[0])
    queues: list[queue.Queue] = [queue.Queue(), queue.Queue()]
    threads = [threading.Thread(target=fn, args=(q,), daemon=True) for fn, q in zip((hash_all, write_all), queues)]
    for thread in threads:
        thread.start()
    try:
        while count and state["error"] is None:
            buf = free.get()
            n = fill(read_into, memoryview(buf), min(len(buf), count))
            if not n:
                raise EOFError(f"stream ended inside {rel}, {count} bytes short")
            count -= n
            with lock:
                users[id(buf)] = len(queues)
            for q in queues:
                q.put((buf, n))
    finally:
        for q in queues:
            q.put(None)
        for thread in threads:
            thread.join()
    if state["error"] is not None:
        raise state["error"]
    return state["touched"]


def _skip(read_into, view: memoryview, count: int, rel: str) -> None:
    while count:
        n = fill(read_into, view, min(len(view), count))
        if not n:
            raise EOFError(f"stream ended inside {rel}, {count} bytes short")
        count -= n


def receive(root: str, cache: str | None) -> dict:
    """One stream on stdin (through SSH); the summary goes to stdout."""
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
        if not _challenge(conn, secret):
            refused += 1
            conn.close()
            continue
        thread = threading.Thread(target=_serve, args=(receiver, conn, results), daemon=True)
        thread.start()
        threads.append(thread)
    server.close()  # nothing more is accepted
    for thread in threads:
        thread.join()
    return {"streams": results, "refused": refused}


def _challenge(conn: socket.socket, secret: bytes) -> bool:
    nonce = os.urandom(32)
    conn.settimeout(AUTH_TIMEOUT_S)
    try:
        conn.sendall(nonce)
        answer = read_exact(conn.recv_into, 32)
    except (OSError, EOFError):
        return False
    return hmac.compare_digest(answer, hmac.new(secret, CONTEXT + nonce, hashlib.sha256).digest())


def _serve(receiver: Receiver, conn: socket.socket, results: list) -> None:
    conn.settimeout(IDLE_TIMEOUT_S)
    try:
        summary = receiver.stream(conn.recv_into)
        conn.sendall(json.dumps(summary).encode() + b"\n")
    except (OSError, EOFError, ValueError) as exc:
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

    def _entries(self, index: int, write, write_file) -> None:
        root = self.job["root"]
        for entry in self.job["streams"][index]:
            write(header(entry))
            if "rel" in entry:
                with open(os.path.join(root, entry["rel"]), "rb") as handle:
                    if os.fstat(handle.fileno()).st_size != entry["size"]:
                        raise ValueError(f"{entry['rel']} changed size on the head during the sync")
                    write_file(handle, entry["offset"], entry["size"] - entry["offset"])
        write(header({"end": True}))

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
            self._entries(index, write, write_file)
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
        sock = socket.create_connection((carrier["address"], carrier["port"]), timeout=30)
        self.socks.append(sock)
        with sock:
            sock.settimeout(IDLE_TIMEOUT_S)
            nonce = read_exact(sock.recv_into, 32)
            secret = carrier["secret"].encode()
            sock.sendall(hmac.new(secret, CONTEXT + nonce, hashlib.sha256).digest())

            def write_file(handle, offset: int, count: int) -> None:
                while count:
                    n = sock.sendfile(handle, offset, min(count, 8 << 20))
                    if not n:
                        raise EOFError("file ended early on the head")
                    offset, count = offset + n, count - n
                    self.sent[index] += n
            self._entries(index, sock.sendall, write_file)
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        if not reply:
            return {"error": "the receiver closed the connection without a summary"}
        return json.loads(reply)


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

"""Byte streams between nodes through the controller: `docker save` on one node feeding
`docker load` on others, without a temporary file and without nodes needing SSH keys to
reach each other. One reader is fanned out to every writer, so N workers cost one read."""
from __future__ import annotations

import shlex
import subprocess
import time

from .connection import NodeConn

CHUNK = 1 << 20


class _Local:
    def __init__(self, argv, reading: bool):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE if reading else subprocess.DEVNULL,
                                     stdin=None if reading else subprocess.PIPE,
                                     stderr=subprocess.PIPE)

    def read(self) -> bytes:
        return self.proc.stdout.read1(CHUNK)

    def write(self, data: bytes) -> None:
        self.proc.stdin.write(data)

    def finish(self, timeout: float) -> tuple[int, str]:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return 124, "timed out"
        return self.proc.returncode, err.decode(errors="replace")


class _Remote:
    def __init__(self, conn: NodeConn, argv, timeout: float):
        conn.connect()
        self.chan = conn._fabric.client.get_transport().open_session()
        self.chan.settimeout(timeout)
        self.chan.exec_command(shlex.join(argv))

    def read(self) -> bytes:
        return self.chan.recv(CHUNK)

    def write(self, data: bytes) -> None:
        self.chan.sendall(data)

    def finish(self, timeout: float) -> tuple[int, str]:
        self.chan.shutdown_write()
        deadline = time.monotonic() + timeout
        err = b""
        while not self.chan.exit_status_ready() and time.monotonic() < deadline:
            while self.chan.recv_stderr_ready():
                err += self.chan.recv_stderr(65536)
            time.sleep(0.05)
        while self.chan.recv_stderr_ready():
            err += self.chan.recv_stderr(65536)
        rc = self.chan.recv_exit_status() if self.chan.exit_status_ready() else 124
        self.chan.close()
        return rc, err.decode(errors="replace")


def _open(conn: NodeConn, argv, reading: bool, timeout: float):
    return _Local(argv, reading) if conn.is_local else _Remote(conn, argv, timeout)


def fan_out(src: NodeConn, src_argv, dsts: list[tuple[NodeConn, list[str]]], *,
            timeout: float = 3600) -> tuple[int, dict[str, tuple[int, str]]]:
    """Stream src_argv's stdout into every destination argv's stdin. Returns the bytes moved
    and {node: (exit status, stderr)} with the source under its own name."""
    reader = _open(src, src_argv, True, timeout)
    writers = {conn.name: _open(conn, argv, False, timeout) for conn, argv in dsts}
    moved = 0
    broken: dict[str, tuple[int, str]] = {}
    while True:
        data = reader.read()
        if not data:
            break
        moved += len(data)
        for name, writer in writers.items():
            if name in broken:
                continue
            try:
                writer.write(data)
            except OSError as exc:  # that node's side died; the others go on
                broken[name] = (1, f"stream broke: {exc}")
    results = {src.name + " (source)": reader.finish(timeout)}
    for name, writer in writers.items():
        status = writer.finish(timeout)
        results[name] = broken.get(name) or status
    return moved, results

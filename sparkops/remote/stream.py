"""Running a command on a node with a large stdin (a manifest, a file list) while handing its
output over line by line (rsync's progress), with a timeout.

invoke's stdin forwarding breaks on inputs of some tens of KB ("Socket is closed"), so a
command with stdin gets its own SSH channel of the node's connection here; NodeConn.run
sends every stdin this way. Progress lines end in
'\\r', so both '\\r' and '\\n' end a line.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import threading
import time

from ..errors import ConnectError
from .connection import CommandTimeout, NodeConn, Result

_EOL = re.compile(r"[\r\n]")
CHUNK = 1 << 16


class _Lines:
    """Keeps all output; calls on_line for each whole line."""

    def __init__(self, on_line):
        self.on_line, self.buffer, self.parts = on_line, "", []

    def write(self, data: bytes) -> None:
        text = data.decode(errors="replace")
        self.parts.append(text)
        if self.on_line is None:
            return
        self.buffer += text
        *lines, self.buffer = _EOL.split(self.buffer)
        for line in lines:
            if line.strip():
                self.on_line(line)

    def text(self) -> str:
        return "".join(self.parts)


def run_piped(conn: NodeConn, argv, *, stdin: str, timeout: float, on_line=None) -> Result:
    argv = tuple(argv)
    start = time.monotonic()
    out, err = _Lines(on_line), _Lines(on_line)
    if conn.is_local:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        feed = threading.Thread(target=_feed_local, args=(proc, stdin.encode()), daemon=True)
        drain = threading.Thread(target=_drain, args=(proc.stderr, err), daemon=True)
        feed.start()
        drain.start()
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _drain(proc.stdout, out)
            rc = proc.wait()
            drain.join()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if time.monotonic() - start >= timeout:
            raise CommandTimeout(conn.name, argv, timeout, out.text() + err.text())
        return Result(conn.name, argv, rc, out.text(), err.text(), time.monotonic() - start)
    conn.connect()
    try:
        chan = conn._fabric.client.get_transport().open_session(timeout=30)
        chan.exec_command(shlex.join(argv))
        feed = threading.Thread(target=_feed_channel, args=(chan, stdin.encode()), daemon=True)
        feed.start()
        deadline = start + timeout
        while True:
            busy = False
            if chan.recv_ready():
                out.write(chan.recv(CHUNK))
                busy = True
            if chan.recv_stderr_ready():
                err.write(chan.recv_stderr(CHUNK))
                busy = True
            if not busy:
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if time.monotonic() > deadline:
                    chan.close()
                    raise CommandTimeout(conn.name, argv, timeout, out.text() + err.text())
                time.sleep(0.005)
        rc = chan.recv_exit_status()
        chan.close()
    except (OSError, EOFError) as exc:
        conn.close()
        raise ConnectError(f"lost the SSH connection to {conn.host}: {exc}", host=conn.name) from None
    return Result(conn.name, argv, rc, out.text(), err.text(), time.monotonic() - start)


def _drain(stream, sink: _Lines) -> None:
    while chunk := stream.read1(CHUNK):
        sink.write(chunk)


def _feed_local(proc: subprocess.Popen, data: bytes) -> None:
    try:
        proc.stdin.write(data)
        proc.stdin.close()
    except OSError:  # the command ended without reading it all; its exit status tells
        pass


def _feed_channel(chan, data: bytes) -> None:
    try:
        chan.sendall(data)
        chan.shutdown_write()
    except OSError:
        pass

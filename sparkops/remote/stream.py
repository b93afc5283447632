"""Running a command with a large stdin (a manifest, a file list) while handing its output
over line by line (Docker's build output, pip's lines in install-vllm), with a timeout: on this
machine (a subprocess) or through one SSH channel of an open paramiko client.

invoke's stdin forwarding breaks on inputs of some tens of KB ("Socket is closed"), so a
command with stdin gets its own SSH channel here; NodeConn sends every stdin this way.
Progress lines end in '\\r', so both '\\r' and '\\n' end a line.
"""
from __future__ import annotations

import os
import re
import selectors
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from sparkops.remote.result import CommandTimeout, Result

_EOL = re.compile(r"[\r\n]")
CHUNK = 1 << 16
OnLine = Callable[[str], None]


class Lines:
    """Keeps all output (unless keep=False: a stream that never ends); calls on_line for each
    whole line."""

    def __init__(self, on_line: OnLine | None, keep: bool = True):
        self.on_line, self.keep = on_line, keep
        self.buffer = ""
        self.parts: list[str] = []

    def write(self, data: bytes) -> None:
        text = data.decode(errors="replace")
        if self.keep:
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


def run_local(node: str, argv: Sequence[str], *, stdin: str, timeout: float,
              on_line: OnLine | None = None) -> Result:
    argv = tuple(argv)
    start = time.monotonic()
    out, err = Lines(on_line), Lines(on_line)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin and proc.stdout and proc.stderr
    finished = threading.Event()
    # Feeding stdin while both outputs drain (a full pipe would block all three), and a
    # watchdog that kills the command at its timeout even when it prints nothing.
    with ThreadPoolExecutor(max_workers=3) as pool:
        pool.submit(_feed_pipe, proc.stdin, stdin.encode())
        drained = pool.submit(_drain, proc.stderr, err)
        expired = pool.submit(_kill_after, proc, finished, timeout)
        try:
            _drain(proc.stdout, out)
            rc = proc.wait()
        finally:
            finished.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            drained.result()
    if expired.result():
        raise CommandTimeout(node, argv, timeout, out.text() + err.text())
    return Result(node, argv, rc, out.text(), err.text(), time.monotonic() - start)


def _kill_after(proc: subprocess.Popen, finished: threading.Event, timeout: float) -> bool:
    """Whether the command had to be killed for running past its timeout."""
    if finished.wait(timeout) or proc.poll() is not None:
        return False
    proc.kill()
    return True


def run_channel(client: Any, node: str, argv: Sequence[str], *, stdin: str, timeout: float,
                on_line: OnLine | None = None) -> Result:
    """On an open paramiko SSHClient; OSError/EOFError mean the connection was lost."""
    argv = tuple(argv)
    start = time.monotonic()
    out, err = Lines(on_line), Lines(on_line)
    chan = client.get_transport().open_session(timeout=30)
    chan.exec_command(shlex.join(argv))
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(_feed_channel, chan, stdin.encode())
        deadline = start + timeout
        try:
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
                        raise CommandTimeout(node, argv, timeout, out.text() + err.text())
                    time.sleep(0.005)
            rc = chan.recv_exit_status()
        finally:
            chan.close()  # also ends a feed still blocked on a full window
    return Result(node, argv, rc, out.text(), err.text(), time.monotonic() - start)


def follow_local(argv: Sequence[str], on_line: OnLine, stop: threading.Event) -> None:
    """Run argv (`tail -F`), handing each output line to on_line, until it ends or `stop` is set."""
    lines = Lines(on_line, keep=False)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        assert proc.stdout
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stdout, selectors.EVENT_READ)
                while not stop.is_set():
                    if sel.select(0.2):
                        chunk = os.read(proc.stdout.fileno(), CHUNK)
                        if not chunk:
                            break
                        lines.write(chunk)
        finally:
            proc.kill()


def follow_channel(client: Any, argv: Sequence[str], on_line: OnLine, stop: threading.Event) -> None:
    """The same over SSH. A pty, so that closing the channel hangs up the remote command too."""
    lines = Lines(on_line, keep=False)
    chan = client.get_transport().open_session(timeout=30)
    try:
        chan.get_pty()
        chan.exec_command(shlex.join(argv))
        while not stop.is_set():
            if chan.recv_ready():
                lines.write(chan.recv(CHUNK))
            elif chan.exit_status_ready():
                break
            else:
                stop.wait(0.05)
    finally:
        chan.close()


def _drain(stream: IO[bytes], sink: Lines) -> None:
    while chunk := stream.read1(CHUNK):  # type: ignore[attr-defined]
        sink.write(chunk)


def _feed_pipe(pipe: IO[bytes], data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except OSError:  # the command ended without reading it all; its exit status tells
        pass


def _feed_channel(chan: Any, data: bytes) -> None:
    try:
        chan.sendall(data)
        chan.shutdown_write()
    except OSError:
        pass


class Held:
    """A command that keeps running while we keep its stdin open (a lock holder): read its
    lines as they come, then `release()` closes its stdin and waits for it to end. If this
    process dies first, its stdin closes all the same (the pipe, or the SSH connection)."""

    def __init__(self, read: Callable[[int], bytes], ready: Callable[[float], bool],
                 close_input: Callable[[], None], finish: Callable[[float], None],
                 write: Callable[[bytes], None]):
        self._read, self._ready, self._close_input, self._finish = read, ready, close_input, finish
        self._write = write
        self._buf = b""
        self.ended = False

    def readline(self, timeout: float | None) -> str | None:
        """The next line (without its newline), or None on timeout or when the command ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            if not self._ready(0.2 if left is None else min(0.2, left)):
                continue
            chunk = self._read(CHUNK)
            if not chunk:
                self.ended = True
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode("utf-8", "replace")

    def send(self, text: str) -> None:
        """Write to its stdin, which stays open (how a job or a secret reaches it: never argv)."""
        self._write(text.encode())

    def release(self, timeout: float = 10) -> None:
        try:
            self._close_input()
        except OSError:
            pass
        self._finish(timeout)


def hold_local(argv: Sequence[str]) -> Held:
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin and proc.stdout
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)

    def finish(timeout: float) -> None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        sel.close()
        proc.stdout.close()  # type: ignore[union-attr]

    def write(data: bytes) -> None:
        proc.stdin.write(data)  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]

    return Held(lambda n: os.read(proc.stdout.fileno(), n), lambda t: bool(sel.select(t)),  # type: ignore[union-attr]
                proc.stdin.close, finish, write)


def hold_channel(client: Any, argv: Sequence[str]) -> Held:
    chan = client.get_transport().open_session(timeout=30)
    chan.exec_command(shlex.join(argv))

    def ready(timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not (chan.recv_ready() or chan.exit_status_ready() or chan.closed):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def finish(timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not chan.exit_status_ready() and time.monotonic() < deadline:
            time.sleep(0.02)
        chan.close()

    return Held(chan.recv, ready, chan.shutdown_write, finish, chan.sendall)

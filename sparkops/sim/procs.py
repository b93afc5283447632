"""Finding and ending processes by namespace, read straight from /proc (no ps parsing)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def ns_inode(path: str | Path) -> int | None:
    """Inode of a namespace file (/run/netns/X or /proc/PID/ns/KIND), None if it is gone."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pids_in_ns(kind: str, inode: int) -> list[int]:
    """Root-namespace pids of the processes living in namespace `kind` (net, pid, ...) `inode`."""
    return [p for p in _all_pids() if ns_inode(f"/proc/{p}/ns/{kind}") == inode]


def pids_with_arg(needle: str, programs: set[str]) -> list[int]:
    """Pids of `programs` (by command name) whose command line mentions `needle`."""
    found = []
    for pid in _all_pids():
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if comm in programs else b""
        except OSError:
            continue
        if needle.encode() in cmdline:
            found.append(pid)
    return found


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses; the fields start after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def is_alive(pid: int) -> bool:
    """True for a running process, False for a gone or zombie one."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def with_descendants(pids: list[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields:
            children.setdefault(int(fields[1]), []).append(pid)
    found, todo = set(), list(pids)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def root_pid(nspid: int, pidns_inode: int) -> int | None:
    """Translate a pid as seen inside a PID namespace (e.g. from a pid file) to the root's view."""
    for pid in pids_in_ns("pid", pidns_inode):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:") and int(line.split()[-1]) == nspid:
                return pid
    return None


def wait_gone(pids: set[int] | list[int], timeout: float, reap: Iterable = ()) -> list[int]:
    """Wait until none of `pids` runs any more; return those still running at the timeout.
    `reap`: our own Popen children among them. Reaping them at once matters: a PID namespace's
    init only dies after every zombie of the namespace is reaped, which the machine's init may
    do only seconds later."""
    deadline = time.monotonic() + timeout
    while True:
        for proc in reap:
            proc.poll()
        left = [p for p in pids if is_alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def wait_for(probe, timeout: float, interval: float = 0.02):
    """Call `probe` until it returns something true or `timeout` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while not (value := probe()) and time.monotonic() < deadline:
        time.sleep(interval)
    return value


def kill_all(
    pids: set[int] | list[int], sig: int = signal.SIGKILL, timeout: float = 5.0, reap: Iterable = ()
) -> list[int]:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return wait_gone(pids, timeout, reap)

"""Slot ownership and leftover removal.

A slot is owned by whoever holds an flock on its lock file; the kernel drops the lock when the
owner dies. So anything found in a slot one has just locked is a leftover of a dead run, and can
be removed by name: processes in the slot's namespaces, mounts under its directory, its
namespaces, its root-namespace links, its directory.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from sparkops.sim import layout as L
from sparkops.sim import network, procs

DAEMONS = {"sshd", "dockerd", "containerd", "containerd-shim", "unshare", "nsenter", "python3"}


def try_lock(slot: int) -> int | None:
    """Lock `slot` without waiting; returns the lock's file descriptor, None if taken."""
    L.state_root().mkdir(parents=True, exist_ok=True)
    fd = os.open(L.lock_path(slot), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def lock(slot: int | None = None, wait: float = 0.0) -> tuple[int, int]:
    """Lock the given slot (or the first free one), waiting up to `wait` seconds.
    Returns (slot, lock fd)."""
    candidates = range(L.MAX_SLOTS) if slot is None else [slot]
    deadline = time.monotonic() + wait
    while True:
        for s in candidates:
            fd = try_lock(s)
            if fd is not None:
                return s, fd
        if time.monotonic() >= deadline:
            which = "all slots" if slot is None else f"slot {slot}"
            raise RuntimeError(
                f"{which} of the simulated cluster in use (see `python -m sparkops.sim status`)"
            )
        time.sleep(0.2)


def slot_pids(slot: int) -> set[int]:
    """Every process of the slot: those in its network namespaces, those naming its directory,
    and their descendants (containers live in namespaces of their own)."""
    pids: list[int] = []
    for ns in network.netns_list(slot):
        inode = procs.ns_inode(f"/run/netns/{ns}")
        if inode:
            pids += procs.pids_in_ns("net", inode)
    # Its daemons, should their namespace have been deleted under them.
    pids += procs.pids_with_arg(f"{L.slot_dir(slot)}/", DAEMONS)
    pids = [p for p in pids if p != os.getpid()]
    return procs.with_descendants(pids) - {os.getpid()}


def slot_mounts(slot: int) -> list[str]:
    """Mount points under the slot's directory or /run/netns entry in this mount namespace."""
    prefixes = (f"{L.slot_dir(slot)}/", f"/run/netns/{L.netns_prefix(slot)}")
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")  # \040 for a space
        if point.startswith(prefixes) or point == str(L.slot_dir(slot)):
            found.append(point)
    return found


def leftovers(slot: int) -> dict[str, list]:
    """What of the slot exists now; all lists empty means nothing is left."""
    return {
        "processes": sorted(slot_pids(slot)),
        "netns": network.netns_list(slot),
        "links": network.root_links(slot),
        "mounts": slot_mounts(slot),
    }


def remove(slot: int, reap: Iterable = ()) -> None:
    """Remove everything of `slot`; the caller holds its lock. `reap`: the caller's Popen
    children among the slot's processes."""
    left = procs.kill_all(slot_pids(slot), signal.SIGKILL, timeout=10, reap=reap)
    if left:
        raise RuntimeError(f"slot {slot}: processes {left} survive SIGKILL")
    network.destroy(slot)
    for point in sorted(slot_mounts(slot), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], stderr=subprocess.DEVNULL, check=False)
    still = slot_mounts(slot)
    if still:
        # Never rmtree through a mount: a bind of a real directory would be emptied.
        raise RuntimeError(f"slot {slot}: cannot unmount {still}")
    shutil.rmtree(L.slot_dir(slot), ignore_errors=True)
    holder = L.holder_path(slot)
    holder.unlink(missing_ok=True)


def stop_holder(slot: int) -> bool:
    """End the process that keeps a slot locked after `python -m sparkops.sim up` exited."""
    try:
        pid = int(L.holder_path(slot).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
    if cmdline != b"sleep\0infinity\0":
        return False  # the holder died long ago and its pid was reused
    procs.kill_all([pid], signal.SIGKILL)
    return True


def keep_locked(slot: int, fd: int) -> int:
    """Hand the slot's lock to a detached `sleep` so the slot stays owned after we exit."""
    proc = subprocess.Popen(
        ["sleep", "infinity"], pass_fds=(fd,), start_new_session=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    L.holder_path(slot).write_text(f"{proc.pid}\n")
    return proc.pid

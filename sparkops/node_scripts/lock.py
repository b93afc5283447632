"""Hold the cluster's operation lock on the head for as long as the caller is alive and says so.

    python3 lock.py PATH HOLDER_JSON [--wait SECONDS] [--silence SECONDS]

An advisory lock (flock) on PATH: the kernel drops it when this process ends, however it ends.
This process ends when its stdin closes, which happens when the `inv` holding it exits or dies
(SIGKILL included), locally or over SSH; and, with --silence, when nothing has arrived on its
stdin for that many seconds: the caller writes a byte every few seconds, so a caller that hangs,
or an SSH link that dies without closing (sshd keeps such a session for hours), frees the lock
within the limit. Prints one line per event:
    busy <holder json>       someone holds it (then exit 3, or wait with --wait)
    locked                   we hold it (HOLDER_JSON written into PATH for the next one)
    timeout                  --wait ran out (exit 4)
    error <why>              PATH cannot be used as a lock (exit 5)

One lock per head machine, whoever logs in: PATH is shared by every user (by default in
/run/lock, world-writable and sticky), so whoever creates it makes it writable by all, the
holder's description lives in the file itself (no second file another user could not replace),
and an existing file is opened without O_CREAT: with fs.protected_regular the kernel refuses
O_CREAT on another user's file in a sticky folder even when the file exists.
Standard library only: it runs on the node's own python3.
"""
from __future__ import annotations

import fcntl
import json
import os
import select
import stat
import sys
import time

BUSY, TIMEOUT, UNUSABLE, SILENT = 3, 4, 5, 6
# A system without /run/lock (not Ubuntu or Debian) has /tmp, world-writable and sticky too.
FALLBACK = {"/run/lock": "/tmp"}
OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # O_NONBLOCK: a FIFO planted there cannot hang us


def lock_file(path: str, fallback: dict[str, str] = FALLBACK) -> str:
    """PATH with `~` expanded, or its fallback when its folder is absent."""
    path = os.path.expanduser(path)
    folder, name = os.path.split(path)
    if folder in fallback and not os.path.isdir(folder):
        return os.path.join(fallback[folder], name)
    return path


def open_lock(path: str) -> int:
    """The lock file, opened (never through a link) or created writable by every user."""
    for _ in range(20):
        try:
            return _regular(path, _open_existing(path))
        except FileNotFoundError:
            pass
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | OPEN_FLAGS, 0o666)
        except FileExistsError:
            continue  # another user created it between our two opens: open theirs
        os.fchmod(fd, 0o666)  # past our umask: the next user, whoever it is, must open it too
        return fd
    raise OSError(f"{path} keeps appearing and vanishing")


def _open_existing(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | OPEN_FLAGS)
    except PermissionError:  # made by someone else without write for us: flock needs none
        return os.open(path, os.O_RDONLY | OPEN_FLAGS)


def _regular(path: str, fd: int) -> int:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return fd


def try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def holder(fd: int) -> dict:
    """The holder's description, which it writes right after taking the lock: a moment's retry
    covers a reader that comes between the two."""
    for _ in range(10):
        try:
            value = json.loads(os.pread(fd, 65536, 0) or b"null")
        except (OSError, ValueError):
            value = None
        if isinstance(value, dict):
            return value
        time.sleep(0.05)
    return {}


def record(fd: int, info: dict) -> None:
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
    except OSError:  # opened read-only: the next one is told the holder is unknown
        pass


class Caller:
    """Our stdin: the caller is there while it stays open and, with a silence limit, while
    bytes keep arriving."""

    def __init__(self, silence: float | None):
        self.silence = silence
        self.heard = time.monotonic()

    def there(self, timeout: float) -> bool:
        """Wait up to `timeout` for input; False once the caller has gone or fallen silent."""
        if select.select([0], [], [], timeout)[0]:
            if not os.read(0, 65536):
                return False
            self.heard = time.monotonic()
        return self.silence is None or time.monotonic() - self.heard <= self.silence


def main(argv: list[str]) -> int:
    path, info = lock_file(argv[0]), json.loads(argv[1])
    wait = float(argv[argv.index("--wait") + 1]) if "--wait" in argv else None
    silence = float(argv[argv.index("--silence") + 1]) if "--silence" in argv else None
    caller = Caller(silence)
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd = open_lock(path)
    except OSError as exc:
        print(f"error {exc}", flush=True)
        return UNUSABLE
    if not try_lock(fd):
        print("busy " + json.dumps(holder(fd)), flush=True)
        if wait is None:
            return BUSY
        deadline = time.monotonic() + wait
        while not try_lock(fd):
            if time.monotonic() > deadline:
                print("timeout", flush=True)
                return TIMEOUT
            if not caller.there(0.2):  # a waiter that went away must not take the lock after all
                return SILENT
    record(fd, {**info, "node_pid": os.getpid(), "lock_file": path})
    print("locked", flush=True)
    while caller.there(1.0):
        pass
    return 0 if silence is None or time.monotonic() - caller.heard <= silence else SILENT


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Hold the cluster's operation lock on the head for as long as the caller keeps our stdin open.

    python3 lock.py PATH HOLDER_JSON [--wait SECONDS]

An advisory lock (flock) on PATH: the kernel drops it when this process ends, however it ends,
and this process ends when its stdin closes, which happens when the `inv` holding it exits or
dies (SIGKILL included), locally or over SSH. Prints one line per event:
    busy <holder json>       someone holds it (then exit 3, or wait with --wait)
    locked                   we hold it (HOLDER_JSON written to PATH.holder for the next one)
    timeout                  --wait ran out (exit 4)
Standard library only: it runs on the node's own python3.
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
import time

BUSY, TIMEOUT = 3, 4


def holder(path: str) -> dict:
    try:
        with open(path + ".holder", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def main(argv: list[str]) -> int:
    path, info = os.path.expanduser(argv[0]), json.loads(argv[1])
    wait = float(argv[argv.index("--wait") + 1]) if "--wait" in argv else None
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    if not try_lock(fd):
        print("busy " + json.dumps(holder(path)), flush=True)
        if wait is None:
            return BUSY
        deadline = time.monotonic() + wait
        while not try_lock(fd):
            if time.monotonic() > deadline:
                print("timeout", flush=True)
                return TIMEOUT
            time.sleep(0.2)
    info["node_pid"] = os.getpid()
    tmp = f"{path}.holder.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(info, f)
    os.replace(tmp, path + ".holder")
    print("locked", flush=True)
    while sys.stdin.buffer.read(65536):  # until the holder goes away
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

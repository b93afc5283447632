"""`inv build`'s copy of an image to one worker, run on the head: `docker save IMAGE` piped by
this process into LOADER (`ssh ... WORKER docker load`), counting the bytes on the way.

Unlike a shell pipe (dash has no pipefail), both ends' exit statuses are checked: a failed
`docker save` is never reported as a successful load. Lines on stdout, one each:

    bytes N          about every second, N bytes handed to the loader so far
    ok N             both ends exited 0
    failed: WHY      either did not (its exit status and last lines of output)

It stops both ends and exits when its stdin closes before it is done: the controller let go
of it (Ctrl-C, an error elsewhere) or died, or its SSH connection broke.

usage: image_copy.py IMAGE LOADER_ARGV...
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading

CHUNK = 1 << 20
TAIL_LINES = 10


class Tail(threading.Thread):
    """Keeps the last lines of a child's output."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream, self.lines = stream, []

    def run(self) -> None:
        for raw in iter(self.stream.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            if line:
                self.lines = (self.lines + [line])[-TAIL_LINES:]

    def text(self) -> str:
        self.join(5)
        return " | ".join(self.lines)


def say(lock: threading.Lock, text: str) -> None:
    with lock:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("failed: usage: image_copy.py IMAGE LOADER_ARGV...", flush=True)
        return 2
    image, loader = argv[0], argv[1:]
    lock = threading.Lock()
    save = subprocess.Popen(["docker", "save", image], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    load = subprocess.Popen(loader, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    save_err, load_out = Tail(save.stderr), Tail(load.stdout)
    save_err.start()
    load_out.start()
    sent = [0]
    done = threading.Event()
    abandoned = threading.Event()

    def watch_stdin() -> None:
        while sys.stdin.buffer.read(1 << 12):  # nothing is expected; EOF means let go
            pass
        if not done.is_set():
            abandoned.set()
            for proc in (save, load):
                proc.kill()

    def tick() -> None:
        while not done.wait(1.0):
            say(lock, f"bytes {sent[0]}")

    threading.Thread(target=watch_stdin, daemon=True).start()
    threading.Thread(target=tick, daemon=True).start()
    assert save.stdout and load.stdin
    broken = False
    while chunk := os.read(save.stdout.fileno(), CHUNK):
        try:
            load.stdin.write(chunk)
        except (BrokenPipeError, ValueError):  # the loader ended early: its status says why
            broken = True
            save.kill()
            break
        sent[0] += len(chunk)
    try:
        load.stdin.close()
    except BrokenPipeError:
        broken = True
    save_rc, load_rc = save.wait(), load.wait()
    done.set()
    if abandoned.is_set():
        say(lock, "failed: stopped before the end (the controller let go)")
        return 3
    if save_rc != 0 and not broken:
        say(lock, f"failed: `docker save {image}` exited {save_rc}: {save_err.text()}")
        return 1
    if load_rc != 0:
        say(lock, f"failed: loading on the worker exited {load_rc}: {load_out.text()}")
        return 1
    if save_rc != 0:
        say(lock, f"failed: `docker save {image}` exited {save_rc}: {save_err.text()}")
        return 1
    say(lock, f"ok {sent[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

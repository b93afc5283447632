"""One operation at a time on a cluster: an advisory lock on the head (node_scripts/lock.py),
held by every verb that changes the cluster, for as long as the verb runs.

The kernel drops the lock when its holder's process ends, so a verb killed with SIGKILL, or
whose SSH connection closes, frees it at once: no stale lock files to clean up. A connection
that dies without closing (a cable pulled, a laptop asleep) is caught by a heartbeat: a byte
every BEAT_S seconds, without which the lock script lets go after SILENCE_S. One lock file per
head machine (`cluster.paths.lock`), shared by every user who logs in there. A second caller is
told who holds it (verb, pid, user, host, since when) and stops, or waits with --wait. Nested
uses in one process (bench-all calls up and down, up --sync calls download) share the outer hold.
"""
from __future__ import annotations

import getpass
import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone

from sparkops.base.errors import ConnectError, SparkopsError
from sparkops.base.progress import Progress
from sparkops.facts.session import ClusterSession
from sparkops.node_scripts import python_argv
from sparkops.remote.stream import Held

_held: dict[str, int] = {}  # lock path on a head -> depth of nested holds in this process
_guard = threading.Lock()
START_S = 60  # to start the lock script and hear from it (an SSH exec, a python3)
# A dead link frees the lock within SILENCE_S + a beat: four beats may go missing (a busy
# controller, a congested link) before the lock script gives up on its holder.
BEAT_S = 10.0
SILENCE_S = 45.0


def lock_path(session: ClusterSession) -> str:
    """The head's lock file, as configured: one per machine, whoever logs in (the lock script
    expands `~` on the node itself and falls back to /tmp where /run/lock is absent)."""
    return str(session.cfg.cluster["paths"]["lock"])


def describe(holder: dict) -> str:
    if not holder:
        return "another sparkops operation (its details are not recorded)"
    since = holder.get("since", "?")
    return (f"`inv {holder.get('verb', '?')}` (pid {holder.get('pid', '?')}, {holder.get('user', '?')}@"
            f"{holder.get('host', '?')}, since {since})")


@contextmanager
def cluster_lock(session: ClusterSession, verb: str, *, wait: float | None = None,
                 progress: Progress | None = None, beat: float = BEAT_S,
                 silence: float = SILENCE_S) -> Iterator[None]:
    """Hold the cluster's lock for the block. `wait`: seconds to wait for a holder to finish
    (None: refuse at once, naming the holder). `beat`, `silence`: the heartbeat's period, and
    how long the lock script waits without one before it lets go."""
    if session.head_name in session.unreachable:
        session.require([session.head_name])
    path = lock_path(session)
    key = f"{session.cfg.cluster_name}:{path}"
    with _guard:
        if _held.get(key):
            _held[key] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield
        finally:
            with _guard:
                _held[key] -= 1
        return
    holder = {"verb": verb, "pid": os.getpid(), "user": getpass.getuser(), "host": socket.gethostname(),
              "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    argv = python_argv("lock.py", path, json.dumps(holder), "--silence", str(silence))
    if wait is not None:
        argv += ["--wait", str(wait)]
    held = session.head.hold(argv)
    heart = Heartbeat(held, beat, session.head_name, progress)
    try:
        line = held.readline(START_S)
        if line is not None and line.startswith("busy"):
            other = _holder(line)
            if wait is None:
                raise SparkopsError(
                    f"cluster {session.cfg.cluster_name!r} is busy: {describe(other)} is changing it",
                    host=session.head_name, step="lock",
                    fix=f"wait for it to finish (`inv status` shows what is serving), or add --wait to queue "
                        f"behind it; the lock is {other.get('lock_file', path)} on {session.head_name}")
            if progress:
                progress.say(f"waiting for {describe(other)} to finish (up to {wait:.0f}s)")
            line = held.readline(wait + START_S)
        if line != "locked":
            why = ("it did not finish in time" if line == "timeout" else
                   line[6:] if line and line.startswith("error ") else f"the lock script said {line!r}")
            raise SparkopsError(f"could not take the lock of cluster {session.cfg.cluster_name!r}: {why}",
                                host=session.head_name, step="lock",
                                fix=f"set cluster.paths.lock to a file every user of {session.head_name} "
                                    "can open" if line and line.startswith("error ") else None)
        with _guard:
            _held[key] = 1
        try:
            yield
        finally:
            with _guard:
                _held.pop(key, None)
    finally:
        heart.stop()
        held.release()


@contextmanager
def locked_facts(session: ClusterSession, verb: str, *, wait: float | None = None,
                 progress: Progress | None = None, head_may_be_down: bool = False) -> Iterator[bool]:
    """The lock first, then the nodes' facts: a verb that waited its turn plans against the
    cluster as it is now, not as it was before the holder changed it. Yields whether the lock
    is held: with `head_may_be_down` (down, check), a head that cannot be reached has no lock
    to take; it is recorded unreachable and the other nodes' facts are read all the same."""
    with ExitStack() as stack:
        try:
            stack.enter_context(cluster_lock(session, verb, wait=wait, progress=progress))
            held = True
        except ConnectError as exc:
            if not head_may_be_down:
                raise
            session.unreachable[session.head_name] = exc
            held = False
        names = [n for n in session.group.names() if n not in session.unreachable]
        if progress:
            progress.say(f"reading facts from {len(names)} node(s)")
        session.gather(names)
        yield held


class Heartbeat:
    """A byte to the lock script every `every` seconds, from a daemon thread, for as long as
    the hold lasts: what tells the lock script that we are still there."""

    def __init__(self, held: Held, every: float, head: str, progress: Progress | None):
        self._held, self._every, self._head, self._progress = held, every, head, progress
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sparkops-lock-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._every):
            try:
                self._held.send("\n")
            except (OSError, EOFError, ValueError) as exc:  # the script ended, or the link did
                if not self._stopped.is_set() and self._progress:
                    self._progress.say(f"warning: [{self._head}] the cluster lock is no longer held "
                                       f"({type(exc).__name__}: {exc or 'closed'}); another operation may start")
                return

    def stop(self) -> None:
        """Before the lock script's stdin is closed: never a write to a closed pipe."""
        self._stopped.set()
        self._thread.join(timeout=2)  # a send stuck on a dead link is left behind


def _holder(line: str) -> dict:
    try:
        value = json.loads(line.partition(" ")[2] or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}

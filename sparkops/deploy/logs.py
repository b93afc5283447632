"""`inv logs`: vLLM and Ray logs from every node, each line prefixed with its node."""
from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TextIO

from sparkops.apply.health import every_service
from sparkops.apply.state import read_state
from sparkops.config import Config
from sparkops.facts.session import cluster_session
from sparkops.plan import RUNTIMES
from sparkops.plan.context import NodeContext, contexts
from sparkops.plan.interfaces import Runtime
from sparkops.remote.connection import NodeConn
from sparkops.remote.group import NodeGroup


def show(cfg: Config, *, node: str | None, lines: int, follow: bool, out: TextIO | None = None) -> list[str]:
    """Print the last `lines` of every service's log (then new lines, with follow, until
    Ctrl-C); returns the nodes that could not be reached, as messages."""
    sink = out or sys.stdout
    runtime = RUNTIMES[cfg.cluster["runtime"]]
    lock = threading.Lock()

    def emit(prefix: str, text: str) -> None:
        with lock:
            for line in text.splitlines():
                print(f"{prefix} {line}", file=sink, flush=True)

    with cluster_session(cfg, [node] if node else None) as session:
        ctxs = {c.name: c for c in contexts(cfg, session.facts, all_nodes=True)}
        services = every_service(cfg, read_state(session))  # a stack's models too

        def one(conn: NodeConn) -> None:
            for service in services:
                res = conn.run(runtime.log_argv(ctxs[conn.name], service, lines), timeout=60)
                if res.ok and (res.stdout or res.stderr):
                    emit(f"[{conn.name}:{service}]", res.stdout + res.stderr)

        failed = session.reachable.map(one).errors()
        if follow:
            follow_all(session.reachable.subset(n for n in ctxs if n not in failed), ctxs, runtime, emit, services)
        return [e.render() for e in (session.unreachable | failed).values()]


def follow_all(group: NodeGroup, ctxs: dict[str, NodeContext], runtime: Runtime,
               emit: Callable[[str, str], None], services: tuple[str, ...]) -> None:
    """Stream new lines from every node and service until Ctrl-C, then end every stream."""
    stop = threading.Event()
    jobs = [(conn, service) for conn in group.conns for service in services]
    with ThreadPoolExecutor(max_workers=len(jobs) or 1) as pool:
        futures = [pool.submit(conn.follow, runtime.log_argv(ctxs[conn.name], service, 0, follow=True),
                               functools.partial(emit, f"[{conn.name}:{service}]"), stop)
                   for conn, service in jobs]
        try:
            while not all(f.done() for f in futures):
                wait(futures, timeout=0.5)
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()

"""`inv logs`: vLLM and Ray logs from every node, each line prefixed with its host."""
from __future__ import annotations

import sys
import threading

from .config import Config
from .lifecycle import connect, gather
from .plan import ALL_SERVICES, RUNTIMES, contexts


def show(cfg: Config, *, node: str | None, lines: int, follow: bool, out=None) -> list[str]:
    out = out or sys.stdout
    runtime = RUNTIMES[cfg.cluster["runtime"]]
    group = connect(cfg, [node] if node else None)
    problems = []
    try:
        facts, down = gather(cfg, group)
        problems += [e.render() for e in down.values()]
        ctxs = [c for c in contexts(cfg, facts, all_nodes=True)]
        lock = threading.Lock()

        def emit(prefix: str, text: str) -> None:
            with lock:
                for line in text.splitlines():
                    print(f"{prefix} {line}", file=out, flush=True)

        def one(conn):
            ctx = next(c for c in ctxs if c.name == conn.name)
            for service in ALL_SERVICES:
                res = conn.run(runtime.log_argv(ctx, service, lines), timeout=60)
                if res.ok and (res.stdout or res.stderr):
                    emit(f"[{conn.name}:{service}]", res.stdout + res.stderr)
        group.subset(facts).map(one)
        if follow:
            follow_all(group.subset(facts), ctxs, runtime, emit)
    finally:
        group.close()
    return problems


def follow_all(group, ctxs, runtime, emit) -> None:
    """Stream new lines from every node until Ctrl-C."""
    def stream(conn, service):
        ctx = next(c for c in ctxs if c.name == conn.name)
        conn.stream(runtime.log_argv(ctx, service, 0, follow=True),
                    lambda line: emit(f"[{conn.name}:{service}]", line))
    threads = [threading.Thread(target=stream, args=(c, s), daemon=True)
               for c in group.conns for s in ALL_SERVICES]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    except KeyboardInterrupt:
        pass

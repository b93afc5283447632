"""`inv down`: stop every sparkops service on every node; and the stop `up --replace` runs."""
from __future__ import annotations

from sparkops.apply.health import every_service
from sparkops.apply.lock import locked_facts
from sparkops.apply.run import step_results
from sparkops.apply.state import read_state
from sparkops.base.progress import Progress
from sparkops.config import Config
from sparkops.facts.session import ClusterSession, cluster_session
from sparkops.plan import plan_down


def stop(session: ClusterSession, progress: Progress) -> list[str]:
    """Stop sparkops services on every reachable node (a stack's models too, by the head's
    record); returns per-node problems."""
    services = every_service(session.cfg, read_state(session))
    plan = plan_down(session.cfg, session.facts, only=list(session.facts), services=services)
    problems = []
    for step in plan.steps:
        problems += [e.render() for e in step_results(session.reachable, step, progress).errors().values()]
    return problems


def down(cfg: Config, *, progress: Progress, wait: float | None = None) -> list[str]:
    """Stop everything on every node; unreachable nodes are reported, the rest still cleaned.
    With the head unreachable there is no lock to take: the others are cleaned all the same."""
    with cluster_session(cfg, gather=False) as session, \
            locked_facts(session, "down", wait=wait, progress=progress, head_may_be_down=True):
        problems = [e.render() for e in session.unreachable.values()]
        if not session.facts:
            return problems
        return problems + stop(session, progress)

"""`inv up --stack NAME`: several models at once behind one endpoint (a stack's plan applied),
ending with every model answering through the router, or with everything this run started
stopped again. The same deployment whole is a no-op; anything missing starts it again."""
from __future__ import annotations

import time

from sparkops.apply.health import deployment_health
from sparkops.apply.lock import locked_facts
from sparkops.apply.run import apply
from sparkops.apply.state import read_state
from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Progress
from sparkops.checks import api
from sparkops.config.stack import Stack
from sparkops.deploy.down import stop
from sparkops.deploy.up import UpResult, leftovers
from sparkops.facts.session import cluster_session
from sparkops.plan import api_url
from sparkops.plan.stack import node_services, plan_stack


def up_stack(stack: Stack, *, replace: bool = False, progress: Progress, wait: float | None = None,
             verb: str = "up") -> UpResult:
    start = time.monotonic()
    cfg = stack.cfg
    first = stack.members[0].served_model_name
    with cluster_session(cfg, gather=False) as session, \
            locked_facts(session, verb, wait=wait, progress=progress):
        session.require(list(node_services(stack)))
        state = read_state(session)
        if state and state.get("hash") == stack.config_hash():
            health = deployment_health(session, state)
            if health.whole:
                progress.say(f"already serving stack {stack.name} (config {state['hash']}) at {state['api_url']}")
                return UpResult(state["api_url"], first, True, time.monotonic() - start)
            progress.say(f"stack {stack.name} (config {state['hash']}) is deployed but not whole: "
                         + "; ".join(health.problems) + ". Starting it again")
        elif state and not replace:
            raise SparkopsError(
                f"{state['profile']!r} (config {state['hash']}) is already deployed on cluster {cfg.cluster_name!r}",
                step="up", fix=f"`inv up --stack {stack.name} --replace` stops it first; `inv down` stops it")
        left = [] if state else leftovers(session)
        if left:
            progress.say(f"stopping what an interrupted operation left running: {', '.join(left)}")
        if state or left:
            stop(session, progress)
            session.gather()
        _refuse_open_api(stack, progress)
        plan = plan_stack(stack, session.facts)
        apply(plan, session.group, progress=progress, api_key=cfg.secrets.get("api_key"))
    return UpResult(api_url(cfg), first, False, time.monotonic() - start)


def _refuse_open_api(stack: Stack, progress: Progress) -> None:
    """The API's access rules, as for a profile (checks/api.py): no endpoint on the network
    without the key unless cluster.api.open says so."""
    found = api.checks(stack.cfg)
    for c in found:
        if c.status == "warn":
            progress.say(f"warning: {c.render()}")
    failed = [c for c in found if c.status == "fail"]
    if failed:
        raise SparkopsError(f"preflight found {len(failed)} problem(s); nothing was started", step="preflight",
                            details=[line for c in failed for line in c.render().splitlines()])

"""`inv up` (and `inv switch`, which is `up --replace`): preflight, then the plan applied on
every node, ending with a working API or with everything this run started stopped again."""
from __future__ import annotations

import time
from dataclasses import dataclass

from sparkops.apply.ready import serving_model
from sparkops.apply.run import apply
from sparkops.apply.state import read_state
from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Progress
from sparkops.checks.preflight import preflight
from sparkops.checks.profile import model_problem
from sparkops.config import Config
from sparkops.config.memfit import nodes_needed
from sparkops.deploy.down import stop
from sparkops.facts.session import ClusterSession, cluster_session
from sparkops.models.sync import ensure_model
from sparkops.plan import api_url, plan_up


@dataclass
class UpResult:
    url: str
    model: str
    already: bool
    seconds: float


def up(cfg: Config, *, replace: bool = False, progress: Progress, sync_model: bool = False) -> UpResult:
    start = time.monotonic()
    needed = [n["name"] for n in cfg.nodes[:nodes_needed(cfg.doc)]]
    with cluster_session(cfg, gather=False) as session:
        progress.say(f"reading facts from {len(session.group)} node(s)")
        session.gather()
        session.require(needed if not replace else None)
        state = read_state(session)
        if state:
            listed = serving_model(state["api_url"], cfg.secrets.get("api_key"))
            if state.get("hash") == cfg.config_hash() and listed and cfg.served_model_name in listed:
                progress.say(f"already serving {state['profile']} (config {state['hash']}) at {state['api_url']}")
                return UpResult(state["api_url"], cfg.served_model_name, True, time.monotonic() - start)
            if not replace:
                raise SparkopsError(
                    f"profile {state['profile']!r} (config {state['hash']}) is already "
                    + ("serving" if listed else "deployed but not answering") + f" on cluster {cfg.cluster_name!r}",
                    step="up", fix=f"`inv switch --profile {cfg.profile}` (or `inv up --replace`) stops it "
                                  f"first; `inv down` stops it")
        if replace or state:
            progress.say("stopping the current deployment first")
            stop(session, progress)
            session.gather()
        if sync_model and _model_missing(session, needed):
            ensure_model(session, progress)
            session.gather()
        _preflight(session, progress)
        plan = plan_up(cfg, session.facts)
        apply(plan, session.group, progress=progress, api_key=cfg.secrets.get("api_key"))
        return UpResult(api_url(cfg), cfg.served_model_name, False, time.monotonic() - start)


def _model_missing(session: ClusterSession, needed: list[str]) -> bool:
    head = session.facts[needed[0]]
    return any(session.facts[n].model_present is False or model_problem(session.facts[n], head, n == needed[0])
               for n in needed)


def _preflight(session: ClusterSession, progress: Progress) -> None:
    cfg = session.cfg
    found = preflight(cfg, session.facts, profile_flag=f"--profile {cfg.profile} --cluster {cfg.cluster_name}",
                      group=session.group)
    for warning in (c for c in found if c.status == "warn"):
        progress.say(f"warning: {warning.render()}")
    problems = [c for c in found if c.status == "fail"]
    if problems:
        raise SparkopsError(f"preflight found {len(problems)} problem(s); nothing was started",
                            step="preflight",
                            details=[line for p in problems for line in p.render().splitlines()])

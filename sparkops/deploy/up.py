"""`inv up` (and `inv switch`, which is `up --replace`): preflight, then the plan applied on
every node, ending with a working API or with everything this run started stopped again."""
from __future__ import annotations

import time
from dataclasses import dataclass

from sparkops.apply.health import deployment_health, service_states, services_on
from sparkops.apply.lock import locked_facts
from sparkops.apply.ready import serving_model
from sparkops.apply.run import apply
from sparkops.apply.state import read_state
from sparkops.base.errors import SparkopsError
from sparkops.base.paths import flags_cache_dir
from sparkops.base.progress import Progress
from sparkops.checks import vllm_flags
from sparkops.checks.preflight import preflight
from sparkops.checks.profile import model_problem
from sparkops.config import Config
from sparkops.config.memfit import nodes_needed
from sparkops.deploy.down import stop
from sparkops.deploy.make_room import make_room
from sparkops.facts.session import ClusterSession, cluster_session
from sparkops.facts.vllm_startup import last_start
from sparkops.models.sync import ensure_model
from sparkops.plan import RUNTIMES, all_services, api_url, plan_heal, plan_up
from sparkops.plan.context import contexts
from sparkops.plan.steps import Plan

# A start's lines (about 60 on vLLM 0.26) with room for warnings between them.
STARTUP_LOG_LINES = 400


@dataclass
class UpResult:
    url: str
    model: str
    already: bool
    seconds: float


def up(cfg: Config, *, replace: bool = False, progress: Progress, sync_model: bool = False,
       wait: float | None = None, verb: str = "up") -> UpResult:
    """`wait`: seconds to wait for another operation's lock (None: refuse, naming it)."""
    start = time.monotonic()
    needed = [n["name"] for n in cfg.nodes[:nodes_needed(cfg.doc)]]
    with cluster_session(cfg, gather=False) as session, \
            locked_facts(session, verb, wait=wait, progress=progress):
        session.require(needed if not replace else None)
        return _up(session, needed, replace=replace, sync_model=sync_model, progress=progress, start=start)


def _up(session: ClusterSession, needed: list[str], *, replace: bool, sync_model: bool, progress: Progress,
        start: float) -> UpResult:
    cfg = session.cfg
    state = read_state(session)
    if state and state.get("hash") == cfg.config_hash():
        # The same deployment: whole means nothing to do; anything missing (a service dead on
        # some node, orphans, an API that hangs) means stop what is left and start it again.
        health = deployment_health(session, state)
        if health.whole:
            progress.say(f"already serving {state['profile']} (config {state['hash']}) at {state['api_url']}")
            return UpResult(state["api_url"], cfg.served_model_name, True, time.monotonic() - start)
        dead = _dead_replicas(state, health.services, session)
        if dead:
            progress.say(f"{state['profile']} (config {state['hash']}) is deployed but not whole: "
                         + "; ".join(health.problems) + ". Starting " + ", ".join(f"{s} on {n}" for n, s in dead)
                         + " again; the router serves from the other replicas meanwhile")
            session.gather()
            apply(plan_heal(cfg, session.facts, dead), session.group, progress=progress,
                  api_key=cfg.secrets.get("api_key"))
            return UpResult(state["api_url"], cfg.served_model_name, False, time.monotonic() - start)
        progress.say(f"{state['profile']} (config {state['hash']}) is deployed but not whole: "
                     + "; ".join(health.problems) + ". Starting it again")
        replace = True
    elif state:
        listed = serving_model(state["api_url"], cfg.secrets.get("api_key"))
        if not replace:
            raise SparkopsError(
                f"profile {state['profile']!r} (config {state['hash']}) is already "
                + ("serving" if listed else "deployed but not answering") + f" on cluster {cfg.cluster_name!r}",
                step="up", fix=f"`inv switch --profile {cfg.profile}` (or `inv up --replace`) stops it "
                              f"first; `inv down` stops it")
    left = [] if state else leftovers(session)
    if left:
        # No deployment recorded, yet services run: an `up` that died before its last step.
        # We hold the lock, so nothing else is starting them: they are left over. Stop them.
        progress.say(f"stopping what an interrupted operation left running: {', '.join(left)}")
    if replace or state or left:
        if not left:
            progress.say("stopping the current deployment first")
        stop(session, progress)
        session.gather()
    if sync_model and _model_missing(session, needed):
        ensure_model(session, progress)
        session.gather()
    _preflight(session, progress)
    plan = plan_up(cfg, session.facts)
    _check_flags(session, plan, progress)
    make_room(session, progress)
    apply(plan, session.group, progress=progress, api_key=cfg.secrets.get("api_key"))
    _say_startup(session, progress)
    return UpResult(api_url(cfg), cfg.served_model_name, False, time.monotonic() - start)


def _dead_replicas(state: dict, services: dict[str, dict[str, dict]], session: ClusterSession) -> list[tuple[str, str]]:
    """Layout replicas: the (node, service) of each replica that is not running, when that is all
    that is wrong (the router runs, every node answers): those alone can start again. Else []:
    the whole deployment starts again."""
    if state.get("backend") != "replicas" or any(n in session.unreachable for n in state.get("nodes") or []):
        return []
    head = (state.get("nodes") or [""])[0]
    if not services.get(head, {}).get("router", {}).get("running"):
        return []
    return [(n, s) for n in state["nodes"] for s in services_on(state, n)
            if s != "router" and not services.get(n, {}).get(s, {}).get("running")]


def _say_startup(session: ClusterSession, progress: Progress) -> None:
    """Where the head's vLLM spent its start-up and what memory it took, from its own log: the
    first thing to read when a start is slow or the KV cache small. Only said when the log has it."""
    head = contexts(session.cfg, session.facts)[0]
    runtime = RUNTIMES[session.cfg.cluster["runtime"]]
    res = session.head.run(runtime.log_argv(head, "vllm", STARTUP_LOG_LINES), timeout=30)
    startup = last_start(res.stdout + res.stderr) if res.ok else None
    if startup and startup.phases:
        progress.say(startup.line())


def leftovers(session: ClusterSession) -> list[str]:
    states = service_states(session, list(session.facts), list(all_services(session.cfg)))
    return [f"{service} on {node}" for node, by in states.items() for service, st in by.items()
            if st["running"] or st["orphaned"]]


def _model_missing(session: ClusterSession, needed: list[str]) -> bool:
    head = session.facts[needed[0]]
    dummy = session.cfg.dummy_weights
    return any(session.facts[n].model_present is False or model_problem(session.facts[n], head, n == needed[0], dummy)
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


def _check_flags(session: ClusterSession, plan: Plan, progress: Progress) -> None:
    """The plan's vLLM flags against the vLLM that will run them (and Ray for backend ray)."""
    head = contexts(session.cfg, session.facts, all_nodes=True)[0]
    progress.say("asking the runtime's vLLM which flags it knows")
    found = [c for c in vllm_flags.checks(plan, head, session.head, flags_cache_dir()) if c.status == "fail"]
    if found:
        raise SparkopsError(f"preflight found {len(found)} problem(s); nothing was started", step="preflight",
                            details=[line for c in found for line in c.render().splitlines()])

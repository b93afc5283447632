"""`inv watch`: look at the running deployment on a clock, say what is wrong, keep the evidence,
and (with --restart) bring the same profile back.

Every interval: each node's services (whole sessions), the API's /health, a 1-token completion
with a timeout (an engine that hangs keeps /health green; this is what notices), and vLLM's
/metrics (requests running and waiting, KV cache use, tokens generated: idle and stuck look
the same to /health). One line per interval, or one JSON event with --json. When something
goes wrong: an incident file under results/incidents/ (what failed, every node's last log
lines, the NCCL transport in the head's log, the last metrics and samples), then with --restart
`up` of the recorded profile, with backoff and a cap per hour; never while a node is
unreachable (watch_rules says why).
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

import requests

from sparkops.apply.health import assess, deployed_services, every_service, probe_deployment, service_states
from sparkops.apply.ready import headers
from sparkops.apply.state import read_state
from sparkops.apply.vllm_metrics import parse_metrics
from sparkops.base.errors import SparkopsError
from sparkops.base.files import atomic_write
from sparkops.base.progress import Progress, Silent
from sparkops.config import Config
from sparkops.config.stack import Stack
from sparkops.deploy.stack_up import up_stack
from sparkops.deploy.up import up
from sparkops.deploy.watch_rules import RestartPolicy, Verdict, judge
from sparkops.facts.nccl_log import parse_nccl_log
from sparkops.facts.session import ClusterSession, cluster_session
from sparkops.plan import RUNTIMES
from sparkops.plan.context import contexts

LOG_LINES = 60
HISTORY = 30


def sample(session: ClusterSession, state: dict, probe_timeout: float) -> dict:
    """One look at the deployment (see the module's docstring)."""
    cfg = session.cfg
    nodes, services = list(state.get("nodes") or []), deployed_services(state)
    states = service_states(session, nodes, services)
    check = probe_deployment(state, cfg.secrets.get("api_key"), completion_timeout=probe_timeout)
    metrics = None
    try:
        r = requests.get(f"{state['api_url']}/metrics", headers=headers(cfg.secrets.get("api_key")), timeout=5)
        metrics = parse_metrics(r.text) if r.status_code == 200 else None
    except requests.RequestException:
        pass
    unreachable = {n: e.message for n, e in session.unreachable.items() if n in nodes}
    return {"t": time.monotonic(), "time": _now(), "profile": state.get("profile"),
            "problems": assess(state, states, unreachable, check), "unreachable": sorted(unreachable),
            "services": states, "api": {"ready": check.ready, "stage": check.stage, "detail": check.detail},
            "metrics": metrics}


def line(s: dict, verdict: Verdict, history: list[dict]) -> str:
    """The live line of one sample."""
    head = f"{s['time'][11:19]} {verdict.state.upper():6} {s.get('profile') or '-'}"
    if verdict.state != "ok":
        return f"{head}: " + "; ".join(verdict.reasons)
    m = s.get("metrics") or {}
    parts = []
    if m:
        kv = m.get("kv_cache_usage")
        parts.append(f"running {m.get('running') or 0:.0f}, waiting {m.get('waiting') or 0:.0f}"
                     + (f", KV cache {kv * 100:.1f}%" if kv is not None else ""))
        prev = next((h for h in reversed(history) if (h.get("metrics") or {}).get("generation_tokens") is not None),
                    None)
        if prev and m.get("generation_tokens") is not None and s["t"] > prev["t"]:
            made = m["generation_tokens"] - prev["metrics"]["generation_tokens"]
            parts.append(f"+{made:.0f} tokens ({made / (s['t'] - prev['t']):.1f} tok/s)")
    return f"{head}: whole" + (" | " + " | ".join(parts) if parts else "")


def incident(session: ClusterSession, s: dict, verdict: Verdict, history: list[dict], folder: Path) -> Path:
    """Write what an operator needs afterwards; returns the file."""
    cfg = session.cfg
    runtime = RUNTIMES[cfg.cluster["runtime"]]
    ctxs = {c.name: c for c in contexts(cfg, session.facts, all_nodes=True)}

    services = every_service(cfg, read_state(session))  # a stack's models too

    def logs(conn) -> dict[str, list[str]]:
        out = {}
        for service in services:
            res = conn.run(runtime.log_argv(ctxs[conn.name], service, LOG_LINES), timeout=60)
            if res.ok and (res.stdout or res.stderr):
                out[service] = (res.stdout + res.stderr).splitlines()[-LOG_LINES:]
        return out
    got = session.reachable.map(logs)
    node_logs = {n: (v if isinstance(v, dict) else {"error": [str(v)]}) for n, v in got.items()}
    head_log = "\n".join(node_logs.get(session.head_name, {}).get("vllm", []))
    nccl = parse_nccl_log(head_log) if "NCCL" in head_log else None
    doc = {"kind": "sparkops-incident", "time": s["time"], "cluster": cfg.cluster_name, "profile": s.get("profile"),
           "verdict": verdict.state, "reasons": list(verdict.reasons), "unreachable": s["unreachable"],
           "services": s["services"], "api": s["api"], "metrics": s["metrics"],
           "nccl": None if nccl is None else {"transports": sorted(nccl.transports),
                                              "fell_back_to_socket": nccl.fell_back_to_socket},
           "logs": node_logs,
           "samples": [{k: h[k] for k in ("time", "problems", "metrics")} for h in history[-10:]]}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return atomic_write(folder / f"{stamp}-{cfg.cluster_name}.json", json.dumps(doc, indent=1) + "\n", mode=0o600)


def watch(cfg: Config, *, interval: float, restart: bool, as_json: bool, stall_s: float, probe_timeout: float,
          incidents: Path, load: Callable[[str], Config | Stack], policy: RestartPolicy | None = None,
          out: TextIO | None = None, progress: Progress | None = None, ticks: int | None = None) -> None:
    """Until Ctrl-C (or `ticks` samples, for tests). `load(profile)` gives the recorded profile's
    configuration for a restart."""
    sink = out or sys.stdout
    policy = policy or RestartPolicy()
    history: list[dict] = []
    restarts: list[float] = []
    last_state = "ok"
    n = 0
    while ticks is None or n < ticks:
        n += 1
        started = time.monotonic()
        with cluster_session(cfg) as session:
            state = read_state(session)
            if state is None:
                why = ("the head cannot be reached" if session.head_name in session.unreachable
                       else "nothing is deployed (no state.json on the head)")
                _emit(sink, as_json, {"event": "none", "time": _now(), "detail": why}, f"{_now()[11:19]} NONE   {why}")
            else:
                s = sample(session, state, probe_timeout)
                verdict = judge(s, history, stall_s)
                event = {"event": "sample", "time": s["time"], "state": verdict.state, "reasons": list(verdict.reasons),
                         "profile": s["profile"], "unreachable": s["unreachable"], "metrics": s["metrics"],
                         "api": s["api"]}
                _emit(sink, as_json, event, line(s, verdict, history))
                if verdict.state != "ok" and last_state == "ok":
                    path = incident(session, s, verdict, history, incidents)
                    _emit(sink, as_json, {"event": "incident", "time": _now(), "file": str(path)},
                          f"           incident written: {path}")
                last_state = verdict.state
                history = (history + [s])[-HISTORY:]
                if restart and verdict.state != "ok":
                    go, why = policy.decide(verdict, s, restarts, time.monotonic())
                    _emit(sink, as_json, {"event": "restart" if go else "hold", "time": _now(), "detail": why},
                          f"           {'restarting' if go else 'holding'}: {why}")
                    if go:
                        restarts.append(time.monotonic())
                        _restart(state, load, sink, as_json, progress or Silent())
        left = interval - (time.monotonic() - started)
        if left > 0 and (ticks is None or n < ticks):
            time.sleep(left)


def _restart(state: dict, load: Callable[[str], Config | Stack], sink: TextIO, as_json: bool,
             progress: Progress) -> None:
    t0 = time.monotonic()
    try:
        loaded = load(state["profile"])
        if isinstance(loaded, Stack):  # a stack ("stack:NAME"): its models and router again
            same = loaded.config_hash() == state.get("hash")
            result = up_stack(loaded, replace=not same, progress=progress, wait=600, verb="watch --restart")
            _emit(sink, as_json, {"event": "restarted", "time": _now(), "seconds": round(time.monotonic() - t0, 1),
                                  "url": result.url, "same_config": same},
                  f"           serving again after {time.monotonic() - t0:.0f}s")
            return
        cfg = loaded
        if state.get("weights") == "dummy" and not cfg.dummy_weights:
            cfg = cfg.with_dummy_weights()  # random weights come back random, not as a 65 GB download
        # The same configuration converges (stops what is left, starts it again); one started with
        # other overrides is replaced by the profile as it loads now, and the line says so.
        same = cfg.config_hash() == state.get("hash")
        result = up(cfg, replace=not same, progress=progress, wait=600, verb="watch --restart")
        _emit(sink, as_json, {"event": "restarted", "time": _now(), "seconds": round(time.monotonic() - t0, 1),
                              "url": result.url, "same_config": same},
              f"           serving again after {time.monotonic() - t0:.0f}s"
              + ("" if same else f" (config {cfg.config_hash()}, not the recorded {state.get('hash')})"))
    except SparkopsError as exc:
        _emit(sink, as_json, {"event": "restart-failed", "time": _now(), "error": exc.message,
                              "step": exc.step, "log": exc.log_tail[-20:]},
              f"           restart FAILED: {exc.render()}")


def _emit(sink: TextIO, as_json: bool, event: dict, text: str) -> None:
    print(json.dumps(event) if as_json else text, file=sink, flush=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

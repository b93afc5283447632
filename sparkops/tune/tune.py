"""`inv tune`: the settings that make a profile fastest on this cluster, by measurement.

Each trial restarts the deployment the way `inv up --set KEY=V` does (preflight, memory check,
flag check, readiness), measures the workload with `inv bench`'s sweep (warm-up, runs, spread)
and records it; a candidate that does not start is recorded as infeasible with its reason and
log tail, and the search goes on. The search itself is pure (search.py), so the record of the
trials is all a resumed run needs. tune holds the cluster's lock throughout and, at the end or
on Ctrl-C, puts back what was serving before it (or stops what it started, and says so).

Layout of a run, under results/tune/<id>/:
  summary.json        identity, search space, objective, SLOs, workload, trials, decisions,
                      winner and its gain over the starting settings (rewritten after each trial)
  trial-NN-*.json     each trial's result, in `inv bench`'s format (provenance.tune: the candidate)
  pareto.png          tok/s per user against total tok/s of every measured cell, the winner marked
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from sparkops.apply.lock import cluster_lock
from sparkops.apply.state import read_state
from sparkops.base.errors import ConnectError, SparkopsError
from sparkops.base.files import atomic_write
from sparkops.base.progress import Progress, duration
from sparkops.bench.load.target import open_target
from sparkops.bench.measure.cells import SweepPlan, depth_plan, int_list, serving_plan
from sparkops.bench.measure.sweep import run_sweep
from sparkops.config import Config, load_config
from sparkops.config.layouts import layout_of
from sparkops.deploy.down import down
from sparkops.deploy.up import up
from sparkops.facts.session import cluster_session
from sparkops.tune import objective as obj
from sparkops.tune.search import Step, Trial, grid_size, key, next_step
from sparkops.tune.space import (
    LAYOUT_KEY,
    SAFE_GPU_MEMORY_UTILIZATION,
    Dimension,
    candidate_sets,
    check_safe,
    describe,
    from_table,
    parse_search,
)

SUMMARY = "summary.json"
KIND = "sparkops-tune-summary"


def tune(*, profile: str, cluster: str | None, search: list[str], concurrency: str | None = None,
         pp: str | None = None, tg: int | None = None, objective: str | None = None, slo: str | None = None,
         runs: int | None = None, resume: bool = False, sets: Sequence[str] = (), results: Path,
         progress: Progress | None = None, loader: Callable[..., Config] = load_config,
         wait: float | None = None) -> dict:
    """Runs the search; returns the summary (also in results/tune/<id>/summary.json)."""
    progress = progress or Progress()
    sets = list(sets)
    base = loader(profile, cluster, sets=sets)
    table = base.doc.get("tune") or {}
    dims = parse_search(search) if search else from_table(table.get("search") or {})
    objective = obj.check_objective(objective or table.get("objective") or "throughput")
    slos = obj.parse_slos(slo if slo is not None else table.get("slo"))
    check_safe(dims, float(table.get("max_gpu_memory_utilization", SAFE_GPU_MEMORY_UTILIZATION)))
    shape = (len(base.nodes), int(base.cluster.get("gpus_per_node", 1)))
    start = {d.key: current_value(base, d.key) for d in dims}
    _check_values(loader, profile, cluster, sets, dims, start, shape)
    plan = workload(base, objective, concurrency=concurrency, pp=pp, tg=tg, runs=runs)
    identity = _identity(base, dims, objective, slos, plan, sets)
    folder, record = _open_run(Path(results), profile, identity, resume, progress)
    record |= {"kind": KIND, "identity": identity, "profile": profile, "cluster": base.cluster_name,
               "objective": objective, "slos": [str(s) for s in slos], "sets": sets,
               "search": [{"key": d.key, "values": list(d.values)} for d in dims], "start": start,
               "workload": {"kind": plan.kind, "cells": [c.id for c in plan.cells], "runs": plan.runs},
               "grid_trials": grid_size(dims, start)}
    record.setdefault("trials", [])
    progress.say(f"tune {profile} on {base.cluster_name}: objective {objective}"
                 + (f" under {', '.join(map(str, slos))}" if slos else "") + "; search "
                 + "; ".join(f"{d.key} in {', '.join(json.dumps(v) for v in d.values)}" for d in dims)
                 + f" (full grid {record['grid_trials']} trials); workload {plan.kind} "
                 + ", ".join(c.id for c in plan.cells) + f", {plan.runs} runs each")
    progress.say(f"  record: {folder / SUMMARY}")
    with cluster_session(base, gather=False) as session:
        with cluster_lock(session, "tune", wait=wait, progress=progress):
            session.gather()  # the head's facts: where its state.json lives
            before = read_state(session)
            try:
                step = _search(record, folder, dims, start, plan, base, loader, cluster, sets, objective, slos,
                               shape, progress)
            except KeyboardInterrupt:
                record["status"] = "interrupted"
                _save(folder, record)
                progress.say(f"interrupted: {len(record['trials'])} trial(s) kept in {folder / SUMMARY}; "
                             f"the same command with --resume continues")
                _restore(before, loader, cluster, base, progress)
                raise
            except SparkopsError:
                record["status"] = "stopped"
                _save(folder, record)
                _restore(before, loader, cluster, base, progress)
                raise
            _finish(record, step, dims, start, objective, slos, folder, progress)
            _restore(before, loader, cluster, base, progress)
    return record


def current_value(cfg: Config, dotted: str):
    """The profile's own value of a searched key (None: not set, vLLM's default)."""
    if dotted == LAYOUT_KEY:
        return layout_of(cfg.doc)
    node = cfg.doc
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def workload(cfg: Config, objective: str, *, concurrency: str | None, pp: str | None, tg: int | None,
             runs: int | None) -> SweepPlan:
    """`inv bench`'s sweep: pp/tg cells at depth 0 when --pp is given, else the shared prompt set
    at each concurrency (the throughput-latency curve). latency measures one stream."""
    bench = cfg.doc["bench"]
    levels = concurrency or ("1" if objective == "latency" else "1,8,32")
    if objective == "latency" and int_list(levels, "concurrency")[0] != 1:
        raise SparkopsError("--objective latency measures one stream: its workload starts at --concurrency 1",
                            step="tune", fix="--concurrency 1 (or 1,N to see load as well)")
    runs = int(runs or 3)
    if pp:
        return depth_plan(pp=pp, tg=tg or 128, depth=0, concurrency=levels, runs=runs, latency_mode="none",
                          suite="tune")
    return serving_plan(concurrency=levels, max_tokens=int(tg or 128), runs=runs, dataset=bench["dataset"],
                        prompts_per_stream=2, min_prompts=8, latency_mode="none", suite="tune")


def _check_values(loader, profile, cluster, sets, dims: list[Dimension], start: dict, shape) -> None:
    """Every value loads (schema, parallelism, memory fit) with the others at the start's: a
    typo or an impossible value is refused before anything stops or starts."""
    for d in dims:
        for v in d.values:
            cand = {k: val for k, val in (start | {d.key: v}).items() if val is not None}
            try:
                loader(profile, cluster, sets=[*sets, *candidate_sets(cand, *shape)])
            except SparkopsError as exc:
                raise SparkopsError(f"--search {d.label(v)} cannot be served: {exc.message}", step="tune",
                                    details=exc.details[:5], fix=exc.fix or "drop that value") from None


def _identity(cfg: Config, dims, objective, slos, plan: SweepPlan, sets) -> str:
    """What makes two tune runs the same search (what --resume matches on)."""
    ident = {"config": cfg.config_hash(), "dims": [[d.key, list(d.values)] for d in dims], "objective": objective,
             "slos": [str(s) for s in slos], "plan": plan.key_fields(), "sets": sorted(sets)}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _open_run(results: Path, profile: str, identity: str, resume: bool, progress: Progress) -> tuple[Path, dict]:
    root = results / "tune"
    if resume:
        found = []
        for path in root.glob(f"*/{SUMMARY}") if root.is_dir() else []:
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            # a finished one too: replayed, it measures nothing and gives its winner again (--write later)
            if doc.get("kind") == KIND and doc.get("identity") == identity:
                found.append((doc.get("created_at", ""), path.parent, doc))
        if found:
            _, folder, doc = max(found, key=lambda f: f[0])
            progress.say(f"resuming {folder}: {len(doc.get('trials', []))} trial(s) already measured")
            return folder, doc
        progress.say("--resume: no tune with these settings in results/tune; starting a new one")
    stamp = datetime.now(timezone.utc)
    folder = root / f"{stamp:%Y%m%d-%H%M%S}-{profile}"
    folder.mkdir(parents=True, exist_ok=False)
    return folder, {"id": folder.name, "created_at": stamp.isoformat(timespec="seconds"), "status": "running"}


def _search(record, folder, dims, start, plan, base, loader, cluster, sets, objective, slos, shape,
            progress) -> Step:
    trials = {key(t["candidate"]): Trial.from_entry(t) for t in record["trials"]}
    while True:
        step = next_step(dims, start, trials)
        if step.candidate is None:
            return step
        n = len(record["trials"])
        done = [t["seconds"] for t in record["trials"] if t.get("seconds")]
        eta = f" (a trial takes about {duration(sum(done) / len(done))})" if done else ""
        progress.say(f"[trial {n}] {describe(step.candidate)}{eta}")
        entry = _run_trial(n, step.candidate, plan, base, loader, cluster, sets, objective, slos, shape, folder,
                           record["id"], progress)
        record["trials"].append(entry)
        trials[key(step.candidate)] = Trial.from_entry(entry)
        _save(folder, record)
        progress.say(f"  -> {entry['status']}: " + (obj.Score(**entry["score"]).text() if entry["status"] == "ok"
                                                     else entry["reason"]))


def _run_trial(n: int, candidate: dict, plan: SweepPlan, base: Config, loader, cluster, sets, objective, slos,
               shape, folder: Path, tune_id: str, progress: Progress) -> dict:
    t0 = time.monotonic()
    given = {k: v for k, v in candidate.items() if v is not None}
    extra = candidate_sets(given, *shape)
    entry: dict = {"trial": n, "candidate": candidate, "sets": extra, "status": "infeasible", "reason": None,
                   "score": vars(obj.Score(None, 0.0, "", "not measured")), "results": [], "log_tail": []}
    try:
        cfg = loader(base.profile, cluster, sets=[*sets, *extra])
        entry["config_hash"] = cfg.config_hash()
        up(cfg, replace=True, progress=progress)
    except SparkopsError as exc:
        if _lost_node(exc):
            raise SparkopsError(f"trial {n} ({describe(candidate)}): a node stopped answering; the search stops "
                                "here", host=exc.host, step="tune", details=[exc.message, *exc.details[:5]],
                                fix="bring the node back (`inv check`), then the same `inv tune` with --resume") \
                from None
        entry["reason"] = f"did not start: {exc.message}" + (f" (step {exc.step})" if exc.step else "")
        entry["log_tail"] = (exc.log_tail or exc.details)[-30:]
        entry["seconds"] = round(time.monotonic() - t0, 1)
        return entry
    docs: list[tuple[dict, Path]] = []
    try:
        for sub in _plans(plan, objective, slos, docs, cfg, folder, n, candidate, tune_id, progress):
            docs.append(sub)
    except SparkopsError as exc:
        if _lost_node(exc):
            raise
        entry |= {"status": "failed", "reason": f"measuring failed: {exc.message}", "log_tail": exc.log_tail[-30:]}
        entry["seconds"] = round(time.monotonic() - t0, 1)
        return entry
    s = obj.score([d for d, _ in docs], objective, slos)
    entry |= {"status": "ok", "score": vars(s), "results": [p.name for _, p in docs],
              "cells": [_cell_summary(c) for d, _ in docs for c in d.get("cells") or []],
              "vllm_version": docs[0][0]["provenance"].get("vllm_version") if docs else None,
              "seconds": round(time.monotonic() - t0, 1)}
    return entry


def _plans(plan: SweepPlan, objective, slos, docs, cfg, folder, n, candidate, tune_id, progress):
    """The sweeps of one trial: the workload (throughput, latency), or goodput's probes, one
    concurrency at a time in bisection order. Yields (document, path)."""
    if objective != "goodput":
        yield _measure(plan, cfg, folder, n, 0, candidate, tune_id, progress)
        return
    levels = sorted({c.concurrency for c in plan.cells})
    by_level: dict[int, bool] = {}
    while True:
        order = obj.bisection_order(levels, lambda c: by_level.get(c))
        nxt = order[-1]
        if nxt in by_level:
            return
        cells = tuple(c for c in plan.cells if c.concurrency == nxt)
        sub = SweepPlan(plan.kind, cells, plan.runs, plan.latency_mode, plan.prefix_caching, plan.suite,
                        plan.dataset)
        doc, path = _measure(sub, cfg, folder, n, len(by_level), candidate, tune_id, progress)
        ok = [c for c in doc.get("cells") or [] if c["status"] == "ok"]
        by_level[nxt] = bool(ok) and all(not obj.slo_misses(c, slos) for c in ok)
        progress.say(f"  c{nxt}: " + ("every SLO holds" if by_level[nxt] else "misses an SLO"))
        yield doc, path


def _measure(plan: SweepPlan, cfg: Config, folder: Path, n: int, part: int, candidate: dict, tune_id: str,
             progress: Progress) -> tuple[dict, Path]:
    out = folder / (f"trial-{n:02d}" + (f"-{part}" if part else "") + ".json")
    with open_target(lambda profile, overrides=(): cfg, cfg, profile=cfg.profile, url=None,
                     need_head=False) as target:
        target.provenance["tune"] = {"id": tune_id, "candidate": candidate, "trial": n}
        doc, path = run_sweep(target, plan, cfg.doc["bench"], results=folder, progress=progress, output=out)
    return doc, path


def _cell_summary(cell: dict) -> dict:
    m = cell.get("metrics") or {}
    spread = cell.get("spread") or {}
    out = (spread.get("output_throughput") or {})
    return {"id": cell["id"], "status": cell["status"], "concurrency": cell["concurrency"],
            "output_tok_s": out.get("mean"), "output_tok_s_std": out.get("std"),
            # per stream: the cell's output rate shared by its streams (a median TPOT reads 0 where a
            # server sends several tokens per chunk, as vLLM's CPU build does)
            "per_user_tok_s": out["mean"] / cell["concurrency"] if out.get("mean") else None,
            **{k: m.get(k) for k in ("p99_ttft_ms", "p99_itl_ms", "p99_tpot_ms", "median_ttft_ms")}}


def _lost_node(exc: SparkopsError) -> bool:
    return isinstance(exc, ConnectError) or exc.step == "connect"


def _finish(record: dict, step: Step, dims, start: dict, objective: str, slos, folder: Path,
            progress: Progress) -> None:
    trials = {key(t["candidate"]): t for t in record["trials"]}
    winner, first = trials[key(step.incumbent)], trials[key(start)]
    record["decisions"] = step.decisions
    for line in step.decisions:
        progress.say("  " + line)
    w, s0 = obj.Score(**winner["score"]), obj.Score(**first["score"])
    changed = {k: v for k, v in step.incumbent.items() if v != start.get(k)}
    record["winner"] = {"candidate": step.incumbent, "changed": changed, "trial": winner["trial"],
                        "score": winner["score"], "sets": winner["sets"], "gain": obj.gain(w, s0),
                        "vllm_version": winner.get("vllm_version")}
    record["status"] = "done"
    record["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    chart = pareto_chart(record, folder)
    record["chart"] = chart.name if chart else None
    _save(folder, record)
    g = record["winner"]["gain"]
    progress.say(f"tune finished: {len(record['trials'])} trials (the full grid: {record['grid_trials']})")
    if not changed:
        progress.say(f"winner: the profile's own settings ({describe(start)}): {w.text()}")
    else:
        progress.say(f"winner: {describe(changed)}: {w.text()}"
                     + (f", {g['percent']:+.1f} % ± {g['std_percent']:.1f} over the starting settings" if g else ""))


def pareto_chart(record: dict, folder: Path) -> Path | None:
    """tok/s per user against total tok/s, a point per measured cell (its concurrency beside it),
    the winner's line bold. None
    without matplotlib (the `charts` extra)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 5))
    win = record["winner"]["trial"]
    for t in record["trials"]:
        pts = [(c["output_tok_s"], c["per_user_tok_s"]) for c in t.get("cells", [])
               if c.get("output_tok_s") and c.get("per_user_tok_s")]
        if not pts:
            continue
        xs, ys = zip(*sorted(pts))
        for c in t.get("cells", []):
            if c.get("output_tok_s") and c.get("per_user_tok_s"):
                ax.annotate(f"c{c['concurrency']}", (c["output_tok_s"], c["per_user_tok_s"]), fontsize=6,
                            textcoords="offset points", xytext=(3, 3))
        label = describe({k: v for k, v in t["candidate"].items() if v != record["start"].get(k)}) \
            if t["trial"] != 0 else "starting settings"
        ax.plot(xs, ys, marker="o", linewidth=2.5 if t["trial"] == win else 1,
                label=("WINNER: " if t["trial"] == win else "") + label)
    ax.set_xlabel("total output tok/s")
    ax.set_ylabel("output tok/s per user (total / concurrency)")
    ax.set_title(f"inv tune {record['profile']}: {record['objective']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    path = folder / "pareto.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _save(folder: Path, record: dict) -> None:
    atomic_write(folder / SUMMARY, json.dumps(record, indent=1, default=str) + "\n")


def _restore(before: dict | None, loader, cluster, base: Config, progress: Progress) -> None:
    """What was serving before tune comes back; with nothing before, what tune started stops."""
    if before:
        progress.say(f"putting back what was serving before tune: {before['profile']} (config {before['hash']})")
        try:
            up(loader(before["profile"], cluster, sets=list(before.get("overrides") or [])), replace=True,
               progress=progress)
        except SparkopsError as exc:
            progress.say(f"could not put it back ({exc.message}); `inv up --profile {before['profile']}` "
                         "starts it again")
        return
    progress.say("nothing was serving before tune: stopping what tune started")
    down(base, progress=progress)

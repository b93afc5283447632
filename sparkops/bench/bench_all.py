"""`inv bench-all`: every profile in turn: switch to it, wait until ready, bench, record.

Each profile ends as ok, failed (with the reason and the head's last log lines) or skipped
(with the reason); a failure never stops the run, and every outcome is a result file, so the
report shows it. Placement:
  default        each profile as configured (TP x PP from the profile and the cluster);
  --single-node  every profile forced onto the head alone (TP=1, PP=1); one that does not fit
                 one node's memory at TP=1 is skipped with the memory estimate as the reason;
  --multi-node   only profiles that span more than one node as configured; the rest skipped;
  --layouts L    each profile in each layout of L (tp, dp, solo: sparkops/config/layouts.py),
                 with the `serving` suite unless --suite says otherwise; a layout the profile
                 does not fit is skipped with the reason.
A single-mode run comes first for each profile (the single-request decode tok/s column of
the report), then the chosen mode (quick or full); or, with --suite NAME[,NAME...], each of
those suites' sweeps in turn on the one start of the profile, a result file per suite (its
cells resumable one by one with --resume).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sparkops.apply.lock import cluster_lock
from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Progress, duration
from sparkops.base.tables import text_table
from sparkops.bench.engines import render, run_engine, settings_for
from sparkops.bench.load.datasets import load_dataset
from sparkops.bench.load.target import layout_provenance, open_target
from sparkops.bench.measure.cells import SweepPlan, suite_plan
from sparkops.bench.measure.sweep import run_sweep, sweep_key
from sparkops.bench.results.files import (
    empty_provenance,
    load_results,
    new_result,
    settings_key,
    weights_provenance,
    write_result,
)
from sparkops.config import Config, load_config
from sparkops.config.layouts import layout_sets
from sparkops.config.memfit import nodes_needed
from sparkops.deploy.down import down
from sparkops.deploy.up import up
from sparkops.facts.session import cluster_session

PLACEMENTS = (None, "single-node", "multi-node")


@dataclass
class Outcome:
    profile: str
    mode: str
    status: str  # ok, failed, skipped, resumed
    reason: str | None
    path: Path | None
    seconds: float
    layout: str | None = None
    suite: str | None = None


def bench_all(*, profiles: list[str], cluster: str | None, sets: list[str], mode: str = "quick",
              skip_token: bool = False, placement: str | None = None, resume: bool = False,
              engine: str = "sparkops", results: Path, keep_last: bool = False,
              suite: str | Sequence[str] | None = None, progress: Progress | None = None,
              loader: Callable[..., Config] = load_config, wait: float | None = None,
              layouts: list[str] | None = None) -> list[Outcome]:
    """Every profile in turn, holding the cluster's lock for the whole run: no other `up` or
    `down` can switch the cluster under a benchmark (the ups and downs inside share the hold).
    `suite`: a suite name, a comma list of them, or a list; each profile is started once and
    benched with every suite in turn."""
    suites = _suites(suite)
    if mode not in ("quick", "full"):
        raise SparkopsError(f"--mode must be quick or full, not {mode!r}", step="bench-all")
    if placement not in PLACEMENTS:
        raise SparkopsError(f"unknown placement {placement!r}", step="bench-all")
    if layouts and placement:
        raise SparkopsError(f"--layouts already says where each profile runs; drop --{placement}", step="bench-all")
    if layouts:
        suites = suites or ["serving"]  # the throughput-latency curve is where layouts part
    if suites and engine != "sparkops":
        raise SparkopsError("sweeps (--suite, --layouts) run with the sparkops engine only", step="bench-all")
    progress = progress or Progress()
    base = loader("smoke", cluster, sets=sets)
    each: list[str | None] = list(layouts) if layouts else [None]
    jobs = [(name, layout) for name in profiles for layout in each]
    with cluster_session(base, gather=False) as session:
        with cluster_lock(session, "bench-all", wait=wait, progress=progress):
            return _bench_all(jobs=jobs, cluster=cluster, sets=sets, mode=mode, skip_token=skip_token,
                              placement=placement, resume=resume, engine=engine, results=results,
                              keep_last=keep_last, suites=suites, progress=progress, loader=loader,
                              shape=(len(base.nodes), base.cluster.get("gpus_per_node", 1)))


def _suites(suite: str | Sequence[str] | None) -> list[str]:
    names = suite.split(",") if isinstance(suite, str) else list(suite or [])
    names = [n.strip() for n in names if n.strip()]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SparkopsError(f"--suite names {', '.join(repeated)} twice", step="bench-all",
                            fix="name each suite once: --suite leaderboard,serving")
    return names


def _bench_all(*, jobs: list[tuple[str, str | None]], cluster: str | None, sets: list[str], mode: str,
               skip_token: bool, placement: str | None, resume: bool, engine: str, results: Path, keep_last: bool,
               suites: list[str], progress: Progress, loader: Callable[..., Config],
               shape: tuple[int, int]) -> list[Outcome]:
    """`jobs`: (profile, layout or None), in order; `shape`: (nodes, GPUs per node) of the cluster."""
    placed = ["serving.tensor_parallel=1", "serving.pipeline_parallel=1"] if placement == "single-node" else []
    done_before = _finished(results) if resume else set()
    complete = _complete_sweeps(results) if resume else set()
    outcomes: list[Outcome] = []
    started = time.monotonic()
    last_cfg = None
    for i, (name, layout) in enumerate(jobs, 1):
        t0 = time.monotonic()
        eta = _eta(outcomes, len(jobs) - i + 1)
        progress.say(f"[{i}/{len(jobs)}] {name}" + (f" in layout {layout}" if layout else "")
                     + (f"  (about {eta} left)" if eta else ""))
        extra = placed + (layout_sets(layout, *shape) if layout else [])
        cfg, why = _load(loader, name, cluster, sets + extra, skip_token, placement, layout)
        # What runs on this profile's one start: (mode, suite) pairs, a result file each.
        runs: list[tuple[str, str | None]] = [("sweep", s) for s in suites] if suites else [("single", None),
                                                                                        (mode, None)]
        if cfg is None:
            for m, s in runs:
                outcomes.append(_record(results, name, cluster, m, engine, "skipped", why, t0, layout=layout, suite=s))
            progress.say(f"      skipped: {why}")
            continue
        bench_cfg = cfg.doc["bench"]
        sweeps: dict[str, SweepPlan] = {}
        for m, s in runs:
            if s is None:
                continue
            try:
                sweeps[s] = suite_plan(s, bench_cfg)
            except SparkopsError as exc:
                outcomes.append(_record(results, name, cfg.cluster_name, m, engine, "skipped", exc.message, t0,
                                        cfg=cfg, layout=layout, suite=s))
                progress.say(f"      skipped {s}: {exc.message}")
        runs = [(m, s) for m, s in runs if s is None or s in sweeps]
        if not runs:
            continue
        plans = {m: settings_for(m, bench_cfg) for m, s in runs if s is None}
        finished = {(m, s) for m, s in runs if resume and (
            (name, cfg.config_hash(), sweep_key(sweeps[s], bench_cfg)) in complete if s is not None
            else _already(done_before, cfg, m, engine, plans[m]))}
        for m, s in runs:
            if (m, s) in finished:
                outcomes.append(Outcome(name, m, "resumed", None, None, 0.0, layout, s))
        if len(finished) == len(runs):
            progress.say(f"      already benched with config {cfg.config_hash()} and the same settings")
            continue
        try:
            up(cfg, replace=True, progress=progress)
            last_cfg = cfg
        except SparkopsError as exc:
            reason = f"up failed: {exc.message}" + (f" (step {exc.step})" if exc.step else "")
            for m, s in runs:
                if (m, s) not in finished:
                    outcomes.append(_record(results, name, cfg.cluster_name, m, engine, "failed", reason, t0, cfg=cfg,
                                            layout=layout, log=exc.log_tail or exc.details[-30:], suite=s))
            progress.say(f"      FAILED: {reason}")
            continue
        for m, s in runs:
            if (m, s) in finished:
                continue
            try:
                with open_target(_fixed(cfg), cfg, profile=name, url=None,
                                 need_head=engine == "vllm") as target:
                    if s is not None:
                        doc, path = run_sweep(target, sweeps[s], bench_cfg, results=results, progress=progress,
                                              resume=resume)
                        outcomes.append(Outcome(name, m, doc["status"], doc["reason"], path,
                                                time.monotonic() - t0, layout, s))
                        progress.say(f"      {s} " + _sweep_line(doc))
                        continue
                    doc = run_engine(target, m, plans[m], engine, progress)
            except SparkopsError as exc:
                outcomes.append(_record(results, name, cfg.cluster_name, m, engine, "failed",
                                        f"bench failed: {exc.message}", t0, cfg=cfg, layout=layout, log=exc.log_tail,
                                        suite=s))
                continue
            path = write_result(doc, results)
            outcomes.append(Outcome(name, m, doc["status"], doc["reason"], path, time.monotonic() - t0, layout))
            progress.say("      " + render(doc).splitlines()[1].strip())
    if last_cfg is not None and not keep_last:
        progress.say("stopping the last profile (--keep-last leaves it serving)")
        down(last_cfg, progress=progress)
    progress.say(summary(outcomes, time.monotonic() - started))
    return outcomes


def _load(loader, name, cluster, sets, skip_token, placement, layout=None) -> tuple[Config | None, str | None]:
    try:
        cfg = loader(name, cluster, sets=sets)
    except SparkopsError as exc:
        detail = "; ".join(exc.details[:3])
        if layout:
            return None, f"layout {layout} does not fit: {detail or exc.message}"
        if placement == "single-node":
            return None, f"does not fit one node at TP=1: {detail or exc.message}"
        return None, f"cannot run on this cluster: {detail or exc.message}"
    if skip_token and cfg.model.get("gated"):
        return None, f"gated model ({cfg.model['repo']}) needs a Hugging Face token (--skip-token)"
    if placement == "multi-node" and nodes_needed(cfg.doc) < 2:
        return None, "runs on one node as configured (--multi-node benches only multi-node profiles)"
    return cfg, None


def _fixed(cfg: Config) -> Callable[..., Config]:
    """A loader for open_target that gives the profile's config as already loaded (with the
    overrides it was deployed with: bench-all deployed it)."""
    return lambda profile, overrides=(): cfg


def _record(results, name, cluster, mode, engine, status, reason, t0, *, cfg=None, log=(), layout=None,
            suite=None) -> Outcome:
    prov = empty_provenance() | {"profile": name, "cluster": cluster, "nccl_note": "not started", "layout": layout}
    settings = {"dataset": "-", "num_prompts": 1, "concurrency": None, "max_tokens": 1,
                "temperature": 0.0, "ignore_eos": True, "endpoint": "chat", "request_rate": "inf"}
    if cfg is not None:
        prov |= {"config_hash": cfg.config_hash(), "model": cfg.model["repo"],
                 "revision": cfg.model.get("revision"), "served_model_name": cfg.served_model_name,
                 "runtime": cfg.cluster["runtime"], "backend": cfg.doc["distributed"]["backend"],
                 **layout_provenance(cfg),
                 "nodes": [n["name"] for n in cfg.nodes[:nodes_needed(cfg.doc)]],
                 **weights_provenance("dummy" if cfg.dummy_weights else "real")}
        if mode != "sweep":
            settings = settings_for(mode, cfg.doc["bench"])
    if suite is not None:
        reason = f"suite {suite}: {reason}"
    doc = new_result(status=status, engine=engine, mode=mode, settings=settings, provenance=prov,
                     reason=reason, log_excerpt=list(log)[-30:])
    return Outcome(name, mode, status, reason, write_result(doc, results), time.monotonic() - t0, layout, suite)


def _finished(results: Path) -> set[tuple[str | None, str | None, str]]:
    found, _ = load_results(results) if Path(results).is_dir() else ([], [])
    return {(d["provenance"]["profile"], d["provenance"]["config_hash"], d["settings"]["key"])
            for _, d in found if d["status"] == "ok"}


def _complete_sweeps(results: Path) -> set[tuple[str | None, str | None, str]]:
    found, _ = load_results(results) if Path(results).is_dir() else ([], [])
    return {(d["provenance"]["profile"], d["provenance"]["config_hash"], d["settings"]["key"])
            for _, d in found if d["mode"] == "sweep" and (d.get("sweep") or {}).get("complete")}


def _sweep_line(doc: dict) -> str:
    cells = doc.get("cells") or []
    counts = {s: sum(c["status"] == s for c in cells) for s in ("ok", "failed", "skipped")}
    return f"sweep: {counts['ok']} cells ok, {counts['failed']} failed, {counts['skipped']} skipped"


def _already(done: set[tuple[str | None, str | None, str]], cfg: Config, mode: str, engine: str,
             settings: dict) -> bool:
    ds = load_dataset(settings["dataset"], settings["num_prompts"], settings["max_tokens"], seed=settings["seed"])
    key = settings_key(engine, mode, settings | {"dataset_digest": ds.digest})
    return (cfg.profile, cfg.config_hash(), key) in done


def _eta(outcomes: list[Outcome], left: int) -> str | None:
    """Average time of the profiles that were switched to and benched, times those left."""
    per: dict[tuple[str, str | None], float] = {}
    for o in outcomes:
        if o.status in ("ok", "failed"):
            per[o.profile, o.layout] = max(per.get((o.profile, o.layout), 0.0), o.seconds)
    if not per or left <= 0:
        return None
    return duration(sum(per.values()) / len(per) * left)


def summary(outcomes: list[Outcome], seconds: float) -> str:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    head = f"bench-all finished in {duration(seconds)}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    rows = [{"profile": o.profile + (f" [{o.layout}]" if o.layout else ""),
             "mode": o.mode + (f" {o.suite}" if o.suite else ""),
             "status": o.status.upper() if o.status == "failed" else o.status,
             "outcome": (o.reason or "") + (f"  -> {o.path}" if o.path else "")} for o in outcomes]
    table = text_table(rows, ["profile", "mode", "status", "outcome"], header=False, indent="  ", gap=" ",
                       min_width={"profile": 28, "mode": 7, "status": 8})
    return head + ("\n" + table if rows else "")

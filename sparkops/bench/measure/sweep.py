"""Run a sweep (cells.py) against a target and keep its result file current: every finished
cell is written at once (atomically), so Ctrl-C keeps what finished and `--resume` continues
at the first unfinished cell of a sweep with the same settings on the same deployment."""
from __future__ import annotations

import asyncio
import hashlib
import json
import random
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path

import requests

from sparkops.apply.ready import headers
from sparkops.apply.vllm_metrics import spec_decode_counters
from sparkops.base.progress import Progress
from sparkops.base.tables import text_table
from sparkops.bench.load.client import BenchmarkError, Client
from sparkops.bench.load.corpus import load_corpus
from sparkops.bench.load.datasets import load_dataset
from sparkops.bench.load.depth_prompts import DepthPrompts, context_only
from sparkops.bench.load.probes import chat_prompt_tokens, max_model_len, measure_latency
from sparkops.bench.load.prompts import Prompt
from sparkops.bench.load.records import BenchRun
from sparkops.bench.load.target import Target
from sparkops.bench.load.tokens import pick_tokens
from sparkops.bench.measure import benchy_metrics, spec_decode
from sparkops.bench.measure.cells import Cell, SweepPlan
from sparkops.bench.measure.metrics import STALL_WARN_MS, summarize
from sparkops.bench.results.files import load_results, new_result, settings_key, speed_only, write_result
from sparkops.config.weights import SPEED_ONLY_NOTE

# Said under every sweep of a server that speculates (docs/benchmarks-and-report.md).
SPEC_NOTE = ("speculative decoding: a step emits 1 + the accepted draft tokens (accepted/step, vLLM's mean "
             "acceptance length over the cell's measured runs), and acceptance depends on the prompts' text: "
             "these tok/s hold for this prompt set (natural text), not for other content")
SPREAD_KEYS = ("output_throughput", "total_token_throughput", "request_throughput", "median_ttft_ms",
               "p99_ttft_ms", "median_tpot_ms", "median_itl_ms", "median_e2el_ms", "p99_e2el_ms")


def run_sweep(target: Target, plan: SweepPlan, bench_cfg: dict, *, results: Path, progress: Progress,
              resume: bool = False, output: Path | None = None) -> tuple[dict, Path]:
    corpus = load_corpus()
    # A fresh seed per sweep: the same prompts again would hit the prefix cache an earlier sweep
    # left on the server and read as a faster prefill. Recorded, so a sweep can be rebuilt.
    settings = _settings(plan, bench_cfg, corpus.digest) | {"seed": secrets.randbits(31)}
    doc = new_result(status="ok", engine="sparkops", mode="sweep", settings=settings,
                     provenance=target.provenance, warnings=target.warnings)
    path = Path(output) if output else Path(results) / f"{doc['id']}.json"
    done: dict[str, dict] = {}
    if resume:
        found = _unfinished(Path(results), doc)
        if found is not None:
            path, old = found
            done = {c["id"]: c for c in old["cells"] if c["status"] in ("ok", "skipped")}
            doc["id"], doc["created_at"] = old["id"], old["created_at"]
            doc["settings"]["seed"] = old["settings"].get("seed", doc["settings"]["seed"])
            progress.say(f"resuming {path}: {len(done)} of {len(plan.cells)} cells already done")
    doc["metrics"] = doc["single"] = None
    doc["sweep"] = {"suite": plan.suite, "kind": plan.kind, "runs": plan.runs, "latency_mode": plan.latency_mode,
                    "latency_ms": 0.0, "tokenizer": "none", "tokenizer_note": "no prompts built (serving sweep)",
                    "prefix_caching": plan.prefix_caching, "corpus": corpus.name if plan.kind == "depth" else None,
                    "corpus_digest": corpus.digest if plan.kind == "depth" else None,
                    "cells_planned": len(plan.cells), "complete": False}
    doc["cells"] = []
    latency = measure_latency(target, plan.latency_mode)
    doc["sweep"]["latency_ms"] = latency * 1000
    builder = None
    if plan.kind == "depth" and any(c.id not in done for c in plan.cells):
        builder = _depth_prompts(target, doc, progress)
    limit = max_model_len(target)
    meter = progress.meter("  sweep", len(plan.cells), unit="cells")
    try:
        for i, cell in enumerate(plan.cells):
            if cell.id in done:
                doc["cells"].append(done[cell.id])
            else:
                t0 = time.monotonic()
                why = cell.too_long(limit)
                if why:
                    result = _cell(cell, "skipped", why, t0)
                else:
                    result = asyncio.run(_measure(target, plan, cell, builder, latency, bench_cfg,
                                                  doc["settings"]["seed"]))
                    result["seconds"] = round(time.monotonic() - t0, 3)
                doc["cells"].append(result)
                write_result(_finish(doc, complete=False), path)
            meter.update(i + 1, note=_note(doc["cells"][-1]))
    except KeyboardInterrupt:
        write_result(_finish(doc, complete=False), path)
        progress.say(f"interrupted: {len(doc['cells'])} finished cells kept in {path}; "
                     "the same command with --resume continues")
        raise
    return _finish(doc, complete=True), write_result(_finish(doc, complete=True), path)


def sweep_key(plan: SweepPlan, bench_cfg: dict) -> str:
    """The settings key a result of this plan carries (what --resume matches on)."""
    return settings_key("sparkops", "sweep", _settings(plan, bench_cfg, load_corpus().digest))


def _settings(plan: SweepPlan, bench_cfg: dict, corpus_digest: str) -> dict:
    ident = json.dumps(plan.key_fields() | {"corpus": corpus_digest}, sort_keys=True)
    max_c = max(c.concurrency for c in plan.cells)
    return {"dataset": plan.dataset or "corpus:sherlock-holmes", "dataset_source": None,
            "dataset_digest": hashlib.sha256(ident.encode()).hexdigest()[:16],
            "num_prompts": sum(c.requests for c in plan.cells) * plan.runs, "concurrency": max_c,
            "max_tokens": max(c.tg for c in plan.cells), "temperature": float(bench_cfg["temperature"]),
            "ignore_eos": True, "endpoint": "chat", "request_rate": "inf", "seed": 0,
            "timeout_s": float(bench_cfg["request_timeout_s"]), "warmup": True}


def _finish(doc: dict, complete: bool) -> dict:
    cells = doc["cells"]
    doc["sweep"]["complete"] = complete
    ok = [c for c in cells if c["status"] == "ok"]
    if complete and cells and not ok:
        doc["status"] = "failed"
        doc["reason"] = "no cell succeeded: " + "; ".join(f"{c['id']}: {c['reason']}" for c in cells[:3])
    else:
        doc["status"], doc["reason"] = "ok", None
    doc["created_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return doc


def _unfinished(folder: Path, doc: dict) -> tuple[Path, dict] | None:
    """The newest sweep result with the same settings on the same deployment, not complete."""
    if not folder.is_dir():
        return None
    p = doc["provenance"]
    same = [(path, d) for path, d in load_results(folder)[0]
            if d["mode"] == "sweep" and d["settings"]["key"] == doc["settings"]["key"]
            and d["provenance"].get("config_hash") == p.get("config_hash")
            and d["provenance"].get("api_url") == p.get("api_url")
            and d["provenance"].get("profile") == p.get("profile")]
    open_ones = [(path, d) for path, d in same if not (d.get("sweep") or {}).get("complete")]
    return max(open_ones, key=lambda pd: pd[1]["created_at"]) if open_ones else None


def _depth_prompts(target: Target, doc: dict, progress: Progress) -> DepthPrompts:
    cfg = target.cfg
    tokens = pick_tokens(target.url, target.model, target.api_key,
                         hf_repo=cfg.model["repo"] if cfg else None,
                         hf_home=target.head.hf_home if target.head else None)
    doc["sweep"]["tokenizer"], doc["sweep"]["tokenizer_note"] = tokens.kind, tokens.note
    if tokens.kind == "approximate":
        doc["warnings"].append("prompt lengths are estimates: neither the server's /tokenize nor the model's "
                               "tokenizer was available; pp t/s uses the server's usage counts")
    progress.say(f"  tokenizing the corpus with {tokens.note}")
    builder = DepthPrompts(tokens, load_corpus())
    builder.calibrate(lambda msgs: chat_prompt_tokens(target, tokens, msgs))
    return builder


async def _measure(target: Target, plan: SweepPlan, cell: Cell, builder: DepthPrompts | None,
                   latency: float, bench_cfg: dict, seed: int) -> dict:
    t0 = time.monotonic()
    timeout = float(bench_cfg["request_timeout_s"])
    async with Client(target.url, target.model, endpoint="chat", temperature=float(bench_cfg["temperature"]),
                      ignore_eos=True, api_key=target.api_key, timeout_s=timeout) as client:
        runs: list[BenchRun] = []
        context_runs: list[BenchRun] = []
        spec_before = None
        try:
            await client.prewarm(cell.concurrency)
            for r in range(plan.runs + 1):  # run 0 is the cell's warm-up
                if r == 1:  # speculative decoding's counters, from the first measured run on
                    spec_before = await asyncio.to_thread(_spec_counters, target)
                batch = _prompts(plan, cell, builder, r, seed)
                if plan.prefix_caching and cell.depth:
                    ctx = await client.run([context_only(p) for p in batch], concurrency=cell.concurrency)
                    if r:
                        context_runs.append(ctx)
                run = await client.run(batch, concurrency=cell.concurrency)
                if not any(rec.success for rec in run.records):
                    first = next(rec.error for rec in run.records)
                    return _cell(cell, "failed", f"{'warm-up' if r == 0 else f'run {r}'}: every request "
                                 f"failed: {first}", t0)
                if r:
                    runs.append(run)
        except (BenchmarkError, OSError) as exc:
            return _cell(cell, "failed", str(exc), t0)
    spec = spec_decode.figures(spec_before, await asyncio.to_thread(_spec_counters, target)) if spec_before else None
    out = _figures(cell, plan, runs, context_runs, latency, t0)
    out["spec_decode"] = spec
    return out


def _spec_counters(target: Target) -> dict | None:
    """The server's speculative-decoding counters now (None: it does not speculate, or its
    /metrics is not vLLM's, as behind a stack's router)."""
    try:
        r = requests.get(f"{target.url}/metrics", headers=headers(target.api_key), timeout=10)
    except requests.RequestException:
        return None
    return spec_decode_counters(r.text) if r.status_code == 200 else None


def _prompts(plan: SweepPlan, cell: Cell, builder: DepthPrompts | None, run: int, seed: int) -> list[Prompt]:
    if plan.kind == "depth":
        assert builder is not None and cell.pp is not None and cell.depth is not None
        rng = random.Random(f"{seed}/{cell.id}/{run}")
        return [builder.build(cell.pp, cell.depth, cell.tg, rng, f"{cell.id}-r{run}-{i}")
                for i in range(cell.requests)]
    assert plan.dataset is not None
    ds = load_dataset(plan.dataset, cell.requests, cell.tg, allow_fewer=True)
    n = len(ds.prompts)
    out = []
    # The warm-up is one wave (a request per stream), not a whole run: enough to open every
    # stream's connection and warm the server, at a fraction of the time.
    for i in range(cell.concurrency if run == 0 else cell.requests):
        p = ds.prompts[(run * cell.requests + i) % n]
        # A tag of its own at the start: no request reuses another's prefix cache.
        out.append(Prompt(f"{p.id}-r{run}-{i}", f"[{seed:x} {cell.id} run {run} #{i}] {p.text}", cell.tg))
    return out


def _figures(cell: Cell, plan: SweepPlan, runs: list[BenchRun], context_runs: list[BenchRun],
             latency: float, t0: float) -> dict:
    out = _cell(cell, "ok", None, t0)
    records = [run.records for run in runs]
    if plan.kind == "depth":
        assert cell.prompt_tokens is not None and cell.pp is not None
        expected = cell.pp if context_runs else cell.prompt_tokens
        out["benchy"] = benchy_metrics.figures(records, cell.concurrency, expected, latency)
        if context_runs:
            out["context"] = benchy_metrics.figures([r.records for r in context_runs], cell.concurrency,
                                                    cell.depth or 1, latency)
    out["prompt_tokens_counted"] = benchy_metrics.counted_prompt_tokens(records)
    per_run = [summarize(run) for run in runs]
    out["spread"] = {k: benchy_metrics.stat([m[k] for m in per_run if m.get(k) is not None]) for k in SPREAD_KEYS}
    out["metrics"] = _pooled(runs)
    notes = []
    failed = sum(m["failed"] for m in per_run)
    if failed:
        notes.append(f"{failed} of {sum(len(r) for r in records)} requests failed: "
                     + "; ".join(next(m["errors"] for m in per_run if m["errors"])[:2]))
    stall = out["metrics"].get("client_max_stall_ms")
    if stall is not None and stall >= STALL_WARN_MS:
        # Chunks that queue in the socket while the client waits for a CPU come out of one
        # read with one timestamp: tg and peak t/s read high, TTFT late. Say so beside them.
        notes.append(f"benchmark client held up {stall:.0f} ms: tg t/s and latencies may be off "
                     "(give the client a CPU of its own)")
    out["reason"] = "; ".join(notes) or None
    return out


def _pooled(runs: list[BenchRun]) -> dict:
    """summarize() over every measured request of the cell, the runs laid end to end."""
    records, offset = [], 0.0
    for run in runs:
        for rec in run.records:
            rec.start_s += offset
            rec.dispatched_s += offset
            records.append(rec)
        offset += run.duration_s
    merged = BenchRun(settings=runs[0].settings, records=records, duration_s=offset,
                      client=runs[-1].client)
    m = summarize(merged)
    m.pop("warnings", None)
    return m


def _cell(cell: Cell, status: str, reason: str | None, t0: float) -> dict:
    return {"id": cell.id, "pp": cell.pp, "tg": cell.tg, "depth": cell.depth, "concurrency": cell.concurrency,
            "requests_per_run": cell.requests, "status": status, "reason": reason,
            "prompt_tokens_requested": cell.prompt_tokens, "prompt_tokens_counted": None,
            "benchy": None, "context": None, "spread": None, "metrics": None, "spec_decode": None,
            "seconds": round(time.monotonic() - t0, 3),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _fmt(stat: dict | None, digits: int = 1) -> str:
    return "-" if not stat else f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _note(cell: dict) -> str:
    if cell["status"] != "ok":
        return f"{cell['id']} {cell['status'].upper()}"
    b, s = cell["benchy"], cell["spread"] or {}
    if b:
        return f"{cell['id']}: pp {_fmt(b['pp_throughput'], 0)} t/s, tg {_fmt(b['tg_throughput'])} t/s"
    return f"{cell['id']}: {_fmt(s.get('output_throughput'))} out tok/s"


def render_sweep(doc: dict, path: Path | None = None) -> str:
    """The sweep as llama-benchy's table (depth) or the throughput-latency table (serving)."""
    p, sw = doc["provenance"], doc["sweep"]
    head = (f"sweep{' ' + repr(sw['suite']) if sw['suite'] else ''} ({sw['kind']}, {sw['runs']} runs per cell, "
            f"latency {sw['latency_mode']} {sw['latency_ms']:.1f} ms, tokens counted by {sw['tokenizer']}) of "
            f"{p.get('served_model_name')} [profile {p.get('profile') or '-'}, vLLM {p.get('vllm_version') or '?'}] "
            f"at {p.get('api_url')}")
    speculating = any(c.get("spec_decode") for c in doc["cells"])
    rows = []
    for c in doc["cells"]:
        row = {"cell": c["id"], "status": c["status"] if c["status"] == "ok" else c["status"].upper()}
        b, s = c["benchy"] or {}, c["spread"] or {}
        if sw["kind"] == "depth":
            row |= {"prompt tok": "-" if c["prompt_tokens_counted"] is None else f"{c['prompt_tokens_counted']:.0f}",
                    "pp t/s": _fmt(b.get("pp_throughput")), "tg t/s": _fmt(b.get("tg_throughput"), 2),
                    "peak t/s": _fmt(b.get("peak_throughput")), "ttfr ms": _fmt(b.get("ttfr")),
                    "est_ppt ms": _fmt(b.get("est_ppt")), "e2e_ttft ms": _fmt(b.get("e2e_ttft"))}
        else:
            row |= {"out tok/s": _fmt(s.get("output_throughput")), "req/s": _fmt(s.get("request_throughput"), 2),
                    "TTFT p50 ms": _fmt(s.get("median_ttft_ms")), "TTFT p99 ms": _fmt(s.get("p99_ttft_ms")),
                    "TPOT p50 ms": _fmt(s.get("median_tpot_ms"), 2)}
        spec = c.get("spec_decode")
        if speculating:
            row["accepted/step"] = (f"{spec['mean_acceptance_length']:.2f}"
                                    if spec and spec["mean_acceptance_length"] is not None else "-")
        row["note"] = c["reason"] or ""
        rows.append(row)
    cols = list(rows[0]) if rows else ["cell"]
    out = [head, text_table(rows, cols, headers={c: c for c in cols}, indent="  ")]
    if speed_only(doc):
        out.append(f"  NOTE: {SPEED_ONLY_NOTE}")
    if doc["status"] != "ok":
        out.append(f"FAILED: {doc['reason']}")
    out += [f"  WARNING: {w}" for w in doc["warnings"]]
    if speculating:
        out.append(f"  NOTE: {SPEC_NOTE}")
    if not sw["complete"]:
        out.append("  (incomplete: --resume continues it)")
    if path:
        out.append(f"result: {path}")
    return "\n".join(out)

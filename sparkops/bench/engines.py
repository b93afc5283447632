"""`inv bench`: pick the settings of a mode, run one engine against a target, write the result.

Modes (as in the seed's scripts):
  single  bench.single_runs (5) sequential streamed requests after the warm-up: TTFT to the first
          content token, decode tokens/s, E2EL, each as mean, std and median;
  quick   bench.quick_num_prompts at bench.quick_concurrency;
  full    bench.num_prompts at bench.concurrency;
  custom  -n/-c (what is not given comes from full).
Sweeps (--pp/--tg/--depth, --suite) are sweep.py's.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path

from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Meter, Progress
from sparkops.bench.load.client import BenchmarkError, run_benchmark
from sparkops.bench.load.datasets import load_dataset
from sparkops.bench.load.records import RequestRecord
from sparkops.bench.load.target import Target
from sparkops.bench.measure.metrics import single_summary, summarize
from sparkops.bench.results.files import new_result, speed_only, write_result
from sparkops.config.weights import SPEED_ONLY_NOTE

MODES = ("single", "quick", "full", "custom")
ENGINES = ("sparkops", "vllm")


def pick_mode(single: bool, quick: bool, num_prompts, concurrency, mode: str | None = None) -> str:
    chosen = [m for m, on in (("single", single), ("quick", quick)) if on]
    if num_prompts is not None or concurrency is not None:
        chosen.append("custom")
    if mode:
        chosen.append(mode)
    if len(set(chosen)) > 1:
        raise SparkopsError(f"choose one mode, not {' and '.join(sorted(set(chosen)))}", step="bench",
                            fix="--single, --quick, -n/-c (custom), or nothing (full)")
    return chosen[0] if chosen else "full"


def settings_for(mode: str, bench_cfg: dict, *, num_prompts=None, concurrency=None, dataset=None,
                 max_tokens=None, temperature=None, ignore_eos=True, endpoint="chat",
                 request_rate=math.inf, seed=0, runs=None) -> dict:
    if mode not in MODES:
        raise SparkopsError(f"unknown mode {mode!r}; one of {', '.join(MODES)}", step="bench")
    n, c = {"single": (runs or bench_cfg.get("single_runs", 5), 1),
            "quick": (bench_cfg["quick_num_prompts"], bench_cfg["quick_concurrency"]),
            "full": (bench_cfg["num_prompts"], bench_cfg["concurrency"]),
            "custom": (num_prompts or bench_cfg["num_prompts"], concurrency or bench_cfg["concurrency"])}[mode]
    return {"dataset": dataset or bench_cfg["dataset"], "num_prompts": int(n),
            "concurrency": int(c) if c else None,
            "max_tokens": int(max_tokens or bench_cfg["max_tokens"]),
            "temperature": float(bench_cfg["temperature"] if temperature is None else temperature),
            "ignore_eos": bool(ignore_eos), "endpoint": endpoint,
            "request_rate": "inf" if request_rate == math.inf else float(request_rate),
            "burstiness": 1.0, "seed": int(seed), "timeout_s": float(bench_cfg["request_timeout_s"]),
            "warmup": True, "slos_ms": None}


def run_engine(target: Target, mode: str, settings: dict, engine: str, progress: Progress) -> dict:
    """Run one benchmark and return its result document (status ok or failed; never raises for
    a failed run, only for bad arguments)."""
    if engine not in ENGINES:
        raise SparkopsError(f"unknown engine {engine!r}; one of {', '.join(ENGINES)}", step="bench")
    dataset = load_dataset(settings["dataset"], settings["num_prompts"], settings["max_tokens"],
                           seed=settings["seed"])
    settings = settings | {"dataset_source": dataset.source, "dataset_digest": dataset.digest}
    result = partial(new_result, engine=engine, mode=mode, settings=settings, provenance=target.provenance)
    warnings = list(target.warnings)
    try:
        if engine == "sparkops":
            run = run_benchmark(
                target.url, target.model, list(dataset.prompts), concurrency=settings["concurrency"],
                request_rate=math.inf if settings["request_rate"] == "inf" else settings["request_rate"],
                temperature=settings["temperature"], endpoint=settings["endpoint"],
                api_key=target.api_key, timeout_s=settings["timeout_s"], warmup=True,
                ignore_eos=settings["ignore_eos"], seed=settings["seed"],
                progress=_requests(progress.meter(f"  {mode} ({engine})", len(dataset.prompts),
                                                  unit="requests")))
            metrics = summarize(run)
            single = single_summary(run.records) if mode == "single" else None
            detail = None
        else:
            from sparkops.bench.vllm_engine import run_vllm_bench
            waves = math.ceil(settings["num_prompts"] / (settings["concurrency"] or settings["num_prompts"]))
            timeout = settings["timeout_s"] * max(1, waves) + 300
            metrics, single, detail = run_vllm_bench(target, dataset, settings, timeout)
            single = single if mode == "single" else None
    except BenchmarkError as exc:
        return result(status="failed", reason=str(exc), warnings=warnings)
    except SparkopsError as exc:
        return result(status="failed", reason=exc.message, log_excerpt=exc.log_tail, warnings=warnings)
    warnings += metrics.pop("warnings", [])
    if metrics.get("completed", 0) == 0:
        return result(status="failed", reason="no request succeeded: " + "; ".join(metrics.get("errors", [])[:3]),
                      metrics=metrics, warnings=warnings, engine_detail=detail)
    return result(status="ok", metrics=metrics, single=single, warnings=warnings, engine_detail=detail)


def _requests(meter: Meter) -> Callable[[int, int, RequestRecord], None]:
    """The client's per-request callback -> the meter, with the failures so far."""
    failed = 0

    def done(count: int, total: int, rec: RequestRecord) -> None:
        nonlocal failed
        failed += not rec.success
        meter.update(count, note=f"{failed} FAILED" if failed else "")
    return done


def save(doc: dict, results_dir: Path, output: Path | None = None) -> Path:
    return write_result(doc, Path(output) if output else Path(results_dir))


def render(doc: dict, path: Path | None = None) -> str:
    """A human summary of one result: the vLLM-style table, plus what failed."""
    p, m, s = doc["provenance"], doc["metrics"], doc["settings"]
    head = (f"{doc['mode']} benchmark ({doc['engine']} engine) of {p.get('served_model_name')} "
            f"[profile {p.get('profile') or '-'}, config {p.get('config_hash') or '-'}, vLLM "
            f"{p.get('vllm_version') or '?'}] at {p.get('api_url')}: {s['num_prompts']} prompts, "
            f"concurrency {s['concurrency'] or 'unbounded'}, max_tokens {s['max_tokens']}")
    out = [head]
    if speed_only(doc):
        out.append(f"  NOTE: {SPEED_ONLY_NOTE}")
    if doc["status"] != "ok":
        out.append(f"FAILED: {doc['reason']}")
        out += [f"  | {line}" for line in doc["log_excerpt"][-15:]]
    if m:
        def f(key, unit=""):
            v = m.get(key)
            return "-" if v is None else f"{v:.2f}{unit}"
        out.append(f"  completed {m['completed']}, failed {m['failed']}, duration {f('duration', ' s')}")
        out.append(f"  throughput: {f('output_throughput')} output tok/s, {f('total_token_throughput')} "
                   f"total tok/s, {f('request_throughput')} req/s")
        for name, label in (("ttft", "TTFT"), ("ttft_content", "TTFT to content"), ("tpot", "TPOT"),
                            ("itl", "ITL"), ("e2el", "E2EL")):
            if m.get(f"mean_{name}_ms") is not None or name != "ttft_content":
                out.append(f"  {label + ' (ms):':<22} mean {f(f'mean_{name}_ms')}  median "
                           f"{f(f'median_{name}_ms')}  p99 {f(f'p99_{name}_ms')}")
        if m.get("client_timestamps"):
            out.append(f"  client: {m['client_timestamps']} timestamps, longest event-loop stall "
                       f"{f('client_max_stall_ms', ' ms')}")
        for e in m.get("errors", []):
            out.append(f"  error: {e}")
    if doc.get("single"):
        out.append("  " + single_line(doc["single"]))
    for w in doc["warnings"]:
        out.append(f"  WARNING: {w}")
    if path:
        out.append(f"result: {path}")
    return "\n".join(out)


def single_line(sg: dict) -> str:
    """The seed's one-line summary, with the spread over the requests."""
    def fig(key: str, unit: str) -> str:
        v, sd, med = sg.get(key), sg.get(f"{key}_std"), sg.get(f"{key}_median")
        if v is None:
            return "-"
        spread = f" ± {sd:.1f}" if sd is not None and sg.get("runs", 1) > 1 else ""
        middle = f" (median {med:.1f})" if med is not None and sg.get("runs", 1) > 1 else ""
        return f"{v:.1f}{spread} {unit}{middle}"
    n = sg.get("runs", 1)
    label = "single request" if n == 1 else f"single, {n} requests"
    return (f"{label}: TTFT {fig('ttft_ms', 'ms')}, decode {fig('decode_tok_s', 'tok/s')}, "
            f"E2EL {fig('e2el_ms', 'ms')}")

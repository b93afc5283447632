"""How close do sparkops' sweep and llama-benchy come to the truth?

Both tools measure the same cells against the synthetic server, whose costs are injected and so
known: prefill takes prompt_tokens / PREFILL_TOK_S, and the gap before output token k is
ITL_S + (prompt_tokens + k) * ITL_PER_CONTEXT_S. For concurrency 1, 8, 64 and 256 (in turn,
alternating which tool goes first) the script reports each tool's error against that truth:
  pp_req   per-request pp t/s (llama-benchy's "t/s (req)") vs prompt_tokens / prefill time
  tg_req   per-request tg t/s vs (n - 1) / sum of the injected gaps
  e2e_ttft time to first token vs the injected prefill time (ms)
  pp_total, tg_total: the run totals vs concurrency x the per-request truth (all requests of a
           run start together, so this is the truth of the total to within the send spread)
The server runs as several processes (SO_REUSEPORT) so that its own lateness stays small.
Both tools must exit 0, and every cell of both must be there with every figure and (sparkops)
no failed request; otherwise the run stops with exit status 1 naming the level, depth and tool
(benchmarks/_checks.py).

    python3 benchmarks/sweep_accuracy.py [--quick] [--out benchmarks/results/sweep_accuracy.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _checks import expect, expect_ok, fail  # noqa: E402
from benchy_compare import benchy_argv, benchy_home, load, ours_argv, start, wait, word_tokenizer  # noqa: E402

from sparkops.testing.synthetic_server import ServerConfig, SyntheticServer  # noqa: E402

PREFILL_TOK_S = 8000.0
ITL_S = 0.02  # 50 tok/s per stream: a large model on a Spark
ITL_PER_CONTEXT_S = 2e-7
PP, TG, DEPTHS = 512, 48, (0, 4096)


def truth(prompt_tokens: int, tg: int) -> dict:
    prefill = prompt_tokens / PREFILL_TOK_S
    gaps = [ITL_S + (prompt_tokens + k) * ITL_PER_CONTEXT_S for k in range(1, tg)]
    return {"pp": prompt_tokens / prefill, "tg": (tg - 1) / sum(gaps), "e2e_ttft_ms": prefill * 1000}


def errors(fig: dict, depth: int, concurrency: int) -> dict:
    t = truth(PP + depth, TG)

    def pct(measured, true):
        return None if measured is None else round(100 * (measured - true) / true, 2)

    def m(key):
        v = fig.get(key)
        return v["mean"] if v else None
    return {"pp_req_pct": pct(m("pp_req_throughput"), t["pp"]), "tg_req_pct": pct(m("tg_req_throughput"), t["tg"]),
            "e2e_ttft_ms": None if m("e2e_ttft") is None else round(m("e2e_ttft") - t["e2e_ttft_ms"], 3),
            "pp_total_pct": pct(m("pp_throughput"), concurrency * t["pp"]),
            "tg_total_pct": pct(m("tg_throughput"), concurrency * t["tg"]),
            "tg_req_std": None if not fig.get("tg_req_throughput") else round(fig["tg_req_throughput"]["std"], 3)}


def finish(case: str, proc, timeout: float) -> None:
    """Wait for a tool's run; a non-zero exit stops the benchmark, naming the case."""
    expect_ok(case, *wait(proc, timeout))


def one_level(url: str, work: Path, home: Path, tokenizer: Path, concurrency: int, runs: int, first: str) -> dict:
    cells = dict(pp=[PP], tg=[TG], depth=list(DEPTHS), concurrency=[concurrency], runs=runs)
    ours_out, theirs_out = work / f"ours-c{concurrency}.json", work / f"benchy-c{concurrency}.json"
    wall = {}
    for tool in ((first, "llama-benchy" if first == "sparkops" else "sparkops")):
        t0 = time.monotonic()
        case = f"c{concurrency} {tool}"
        if tool == "sparkops":
            finish(case, start(ours_argv(url, ours_out, latency_mode="none", **cells)), timeout=1800)
        else:
            finish(case, start(benchy_argv(url, "synthetic", str(tokenizer), theirs_out, latency_mode="none",
                                           **cells), home), timeout=1800)
        wall[tool] = round(time.monotonic() - t0, 1)
    ours, theirs = load(ours_out), load(theirs_out)
    out = {"concurrency": concurrency, "first": first, "wall_s": wall, "cells": []}
    for depth in DEPTHS:
        case = f"c{concurrency} depth {depth}"
        cell = next((c for c in ours["cells"] if c["depth"] == depth), None)
        bench = next((b for b in theirs["benchmarks"]
                      if b["context_size"] == depth and not b["is_context_prefill_phase"]), None)
        if cell is None or bench is None:
            fail(f"{case} {'sparkops' if cell is None else 'llama-benchy'}", "the cell is missing from its result")
        expect(f"{case} sparkops", "cell status", cell["status"], "ok")
        m = cell["metrics"]
        expect(f"{case} sparkops", "requests completed", m["completed"], m["completed"] + m["failed"])
        figures = {"sparkops": errors(cell["benchy"], depth, concurrency),
                   "llama-benchy": errors(bench, depth, concurrency)}
        for tool, fig in figures.items():
            missing = sorted(k for k, v in fig.items() if v is None)
            if missing:
                fail(f"{case} {tool}", f"no figure for {', '.join(missing)}")
        out["cells"].append({"depth": depth, "truth": truth(PP + depth, TG), **figures,
                             "sparkops_client_max_stall_ms": m.get("client_max_stall_ms")})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="concurrency 1 and 8 only, 2 runs")
    ap.add_argument("--levels", default="1,8,64,256")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=max(2, min(8, (os.cpu_count() or 2) - 1)))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sweep_accuracy.json")
    args = ap.parse_args()
    levels = [1, 8] if args.quick else [int(x) for x in args.levels.split(",")]
    runs = 2 if args.quick else args.runs
    cfg = ServerConfig(ttft_s=0.0, itl_s=ITL_S, prefill_tok_s=PREFILL_TOK_S, itl_per_context_token_s=ITL_PER_CONTEXT_S)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        home, tokenizer = benchy_home(work / "home"), word_tokenizer(work / "words.json")
        with SyntheticServer(cfg, process=True, workers=args.workers) as srv:
            for i, c in enumerate(levels):
                level = one_level(srv.base_url, work, home, tokenizer, c, runs,
                                  "sparkops" if i % 2 == 0 else "llama-benchy")
                results.append(level)
                for cell in level["cells"]:
                    print(f"c={c:<4} depth={cell['depth']:<5} sparkops {cell['sparkops']}\n"
                          f"{'':17} llama-benchy {cell['llama-benchy']}", flush=True)
    doc = {"benchmark": "sweep_accuracy", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
           "server": {"prefill_tok_s": PREFILL_TOK_S, "itl_s": ITL_S, "itl_per_context_token_s": ITL_PER_CONTEXT_S,
                      "workers": args.workers},
           "cells": {"pp": PP, "tg": TG, "depths": list(DEPTHS), "runs": runs, "latency_mode": "none"},
           "command": "python3 benchmarks/sweep_accuracy.py " + " ".join(sys.argv[1:]),
           "levels": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

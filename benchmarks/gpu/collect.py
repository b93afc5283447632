"""Turn what benchmarks/gpu/driver.sh left on the GPU machine into one committed data file.

    python benchmarks/gpu/collect.py --run RUN_DIR[:COMMIT] [--run ...] --install-log F \
        --software torch=2.11.0 ... -o benchmarks/results/gpu_h200.json

A RUN_DIR is the folder the driver wrote ($R: steps.jsonl, logs/, results/, agree/); COMMIT is the
sparkops commit it ran (the driver's checkout is a copy without .git). What comes out, per run:
the machine (nvidia-smi), every step with its command, rc and seconds; per vLLM start in the
run's logs the phases and memory (sparkops.facts.vllm_startup) beside sparkops' own estimate
before the start (sparkops.config.memfit, same profile and --set); per benchmarked profile the
serving and depth figures with their spread; the agreement rounds against `vllm bench serve` and
llama-benchy on the same server; what watch did when the API server was killed. Steps that
failed and parts that never ran are listed under `not_measured`, with why.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sparkops.config import load_config  # noqa: E402
from sparkops.config.memfit import estimate  # noqa: E402
from sparkops.facts.vllm_startup import parse, split_starts  # noqa: E402

MODEL = re.compile(r"Initializing a V1 LLM engine \(v[\d.]+\) with config: model='([^']+)'")
FREE = re.compile(r"Free memory on device \(([\d.]+)/([\d.]+) GiB\)")


def machine(run: Path) -> dict:
    query = (run / "nvidia-smi-query.txt").read_text().splitlines()
    fields = [f.strip() for f in query[1].split(",")]
    smi = (run / "nvidia-smi.txt").read_text()
    cuda = re.search(r"CUDA Version: ([\d.]+)", smi)
    return {"gpu": fields[1], "driver": fields[2], "memory_mib": int(fields[3]), "compute_capability": fields[5],
            "cuda": cuda.group(1) if cuda else None, "source": "nvidia-smi on the machine, at the run's start"}


def steps(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines() if line.strip()]


def starts(log: str) -> list[tuple[str | None, object, float | None]]:
    """Every vLLM start in a followed log: (model path, Startup, GiB the GPU had)."""
    out = []
    for chunk in split_starts(log):
        model = next((m.group(1) for line in chunk if (m := MODEL.search(line))), None)
        total = next((float(m.group(2)) for line in chunk if (m := FREE.search(line))), None)
        out.append((model, parse(chunk), total))
    return out


def profile_of(model_path: str | None, profiles: dict[str, str]) -> str | None:
    if not model_path:
        return None
    for repo, name in profiles.items():
        if repo.replace("/", "--") in model_path or model_path.endswith(repo):
            return name
    return None


def sets_of(command: str) -> list[str]:
    argv = shlex.split(command)
    return [argv[i + 1] for i, a in enumerate(argv) if a == "--set" and i + 1 < len(argv)]


def memfit_vs_vllm(profile: str, sets: list[str], startup, gpu_gib: float | None) -> dict:
    cfg = load_config(profile, "gpu", root=ROOT, sets=[s for s in sets if not s.startswith("bench.")],
                      environ={}, node_memory_gib=gpu_gib)
    fit = estimate(cfg.doc, gpu_gib)
    est = {"weights_gib": round(fit.weights_gib, 2), "kv_room_gib": round(fit.kv_room_gib, 2),
           "kv_tokens": int(fit.kv_room_gib * 1024 * 1024 / fit.kv_per_token_kib) if fit.kv_per_token_kib else None,
           "node_memory_gib": gpu_gib, "verdict": fit.verdict}
    got = {"weights_gib": startup.weights_gib, "kv_cache_gib": startup.kv_cache_gib,
           "kv_tokens": startup.kv_cache_tokens}
    gaps = {}
    if startup.weights_gib:
        gaps["weights"] = round(est["weights_gib"] / startup.weights_gib - 1, 3)
    if startup.kv_cache_gib:
        gaps["kv_cache_gib"] = round(est["kv_room_gib"] / startup.kv_cache_gib - 1, 3)
    if startup.kv_cache_tokens and est["kv_tokens"]:
        gaps["kv_tokens"] = round(est["kv_tokens"] / startup.kv_cache_tokens - 1, 3)
    return {"estimate": est, "vllm": got, "estimate_over_vllm_minus_1": gaps}


def spread(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 2),
            "std": round(statistics.pstdev(values), 2) if len(values) > 1 else 0.0,
            "values": [round(v, 2) for v in values]}


def sweep_figures(doc: dict) -> list[dict]:
    out = []
    for cell in doc["cells"]:
        if cell["status"] != "ok":
            out.append({"cell": cell["id"], "status": cell["status"], "reason": cell["reason"]})
            continue
        row: dict = {"cell": cell["id"], "status": "ok"}
        if cell.get("benchy"):
            for key in ("pp_throughput", "tg_throughput", "ttfr"):
                m = cell["benchy"][key]
                row[key] = {"mean": round(m["mean"], 2), "std": round(m["std"], 2)}
        else:
            for key in ("output_throughput", "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms"):
                s = (cell.get("spread") or {}).get(key)
                row[key] = {"mean": round(s["mean"], 2), "std": round(s["std"], 2)} if isinstance(s, dict) else \
                    round(cell["metrics"][key], 2)
        out.append(row)
    return out


def benchmarks(run: Path) -> list[dict]:
    out = []
    for f in sorted((run / "results").glob("2*-sweep-*.json")):
        doc = json.loads(f.read_text())
        out.append({"profile": doc["provenance"]["profile"], "suite": doc["sweep"]["kind"],
                    "runs": doc["sweep"]["runs"], "weights": doc["provenance"].get("weights"),
                    "status": doc["status"], "file": f.name, "cells": sweep_figures(doc)})
    return out


def agreement(run: Path) -> dict:
    agree = run / "agree"
    out: dict = {"engines": [], "benchy": []}
    for n in (1, 2):
        ours, peer = agree / f"sparkops-{n}.json", agree / f"vllm-{n}.json"
        if ours.exists() and peer.exists():
            a, b = json.loads(ours.read_text()), json.loads(peer.read_text())
            row = {"round": n}
            for key in ("completed", "total_input_tokens", "output_throughput", "median_ttft_ms", "median_tpot_ms",
                        "median_itl_ms"):
                x, y = a["metrics"].get(key), b["metrics"].get(key)
                row[key] = {"sparkops": round(x, 2), "vllm_bench_serve": round(y, 2),
                            "sparkops_over_vllm_minus_1": round(x / y - 1, 3) if x and y else None}
            row["like_for_like"] = a["metrics"]["completed"] == b["metrics"]["completed"]
            row["vllm_warnings"] = b.get("warnings", [])
            out["engines"].append(row)
        sweep, benchy = agree / f"sweep-{n}.json", agree / f"benchy-{n}.json"
        if sweep.exists() and benchy.exists():
            ours_cells = {c["concurrency"]: c["benchy"] for c in json.loads(sweep.read_text())["cells"]
                          if c["status"] == "ok"}
            theirs = {b["concurrency"]: b for b in json.loads(benchy.read_text())["benchmarks"]}
            for c in sorted(set(ours_cells) & set(theirs)):
                row = {"round": n, "concurrency": c}
                for key in ("pp_throughput", "tg_throughput", "ttfr"):
                    x, y = ours_cells[c][key], theirs[c].get(key)
                    if isinstance(y, dict):
                        row[key] = {"sparkops": {"mean": round(x["mean"], 2), "std": round(x["std"], 2)},
                                    "llama_benchy": {"mean": round(y["mean"], 2), "std": round(y["std"], 2)},
                                    "sparkops_over_benchy_minus_1": round(x["mean"] / y["mean"] - 1, 3)}
                out["benchy"].append(row)
    return out


def watch(run: Path) -> dict | None:
    f = run / "logs" / "watch.log"
    if not f.exists():
        return None
    events = [json.loads(line) for line in f.read_text().splitlines() if line.startswith("{")]
    failed = next((e for e in events if e.get("event") == "sample" and e.get("state") == "failed"), None)
    restarted = next((e for e in events if e.get("event") == "restarted"), None)
    return {"fault": "the API server's process killed (SIGKILL) while serving",
            "seen_failed": failed and {"time": failed["time"], "reasons": failed["reasons"]},
            "restarted": restarted and {"time": restarted["time"], "seconds": restarted["seconds"],
                                        "same_config": restarted["same_config"]},
            "incident_written": any(e.get("event") == "incident" for e in events)}


def collect(runs: list[tuple[Path, str]], install_log: Path | None, software: dict) -> dict:
    profiles = {}
    for f in (ROOT / "profiles").glob("*.toml"):
        m = re.search(r'^repo\s*=\s*"([^"]+)"', f.read_text(), re.M)
        if m:
            profiles[m.group(1)] = f.stem
    doc: dict = {"kind": "sparkops-gpu-proof", "collected_by": "benchmarks/gpu/collect.py",
                 "machine": machine(runs[0][0]), "software": software, "runs": [], "not_measured": []}
    if install_log and install_log.exists():
        text = install_log.read_text()
        took = re.search(r"^real\s+(\d+)m([\d.]+)s", text, re.M)  # `time inv install-vllm ...`
        doc["install"] = {"log_tail": [line for line in text.splitlines()
                                       if "needs torch" in line or "reused" in line or "wheels:" in line][:4],
                          "seconds": round(int(took.group(1)) * 60 + float(took.group(2)), 1) if took else None}
    for run, commit in runs:
        ran = steps(run)
        commands = {s["step"]: s["command"] for s in ran}
        entry: dict = {"folder": run.name, "sparkops_commit": commit, "steps": ran, "startups": [],
                       "benchmarks": benchmarks(run), "agreement": agreement(run), "watch": watch(run)}
        log = (run / "logs" / "vllm-all.log")
        for model, startup, gpu_gib in starts(log.read_text() if log.exists() else ""):
            profile = profile_of(model, profiles) or ("smoke" if model and "smoke" in model else None)
            row = {"profile": profile, **startup.as_dict()}
            command = next((c for c in commands.values() if profile and profile in c and (" up " in c
                                                                                           or "bench-all" in c)), "")
            if profile and profile != "smoke" and startup.weights_gib is not None:
                row["memory"] = memfit_vs_vllm(profile, sets_of(command), startup, gpu_gib)
            entry["startups"].append(row)
        for s in ran:
            if s["rc"] != 0:
                doc["not_measured"].append(f"{run.name}: step {s['step']} ended rc {s['rc']}: {s['command']}")
        doc["runs"].append(entry)
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, help="RUN_DIR[:COMMIT]")
    ap.add_argument("--install-log", type=Path)
    ap.add_argument("--software", nargs="*", default=[], help="name=version the machine had")
    ap.add_argument("--not-measured", action="append", default=[], help="a part that never ran, and why")
    ap.add_argument("-o", "--out", type=Path, required=True)
    args = ap.parse_args()
    runs = [(Path(r.split(":")[0]), r.split(":")[1] if ":" in r else "unknown") for r in args.run]
    doc = collect(runs, args.install_log, dict(s.split("=", 1) for s in args.software))
    doc["not_measured"] += args.not_measured
    doc["arguments"] = {"software": args.software, "not_measured": args.not_measured,
                        "runs": [f"{p.name}:{c}" for p, c in runs]}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}: {sum(len(r['startups']) for r in doc['runs'])} starts, "
          f"{sum(len(r['benchmarks']) for r in doc['runs'])} benchmark files, {len(doc['not_measured'])} not measured")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

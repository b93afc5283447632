"""Layout replicas: vLLM's router (the `vllm-router` package) in front of independent vLLM
servers, on the head's API port. Run with the serving runtime's Python (`python3 -c`).

The router is started in-process, not with its `vllm-router` command, because that command
takes the API key only as an argument (seen in ps by every user of the node): here it comes
from VLLM_API_KEY, which the service's 0600 env file sets. With a key, the router refuses
/v1/... requests without it and sends it on to the replicas, which demand it too.

usage: router.py --host H --port P --policy NAME --metrics-host H --metrics-port P
                 --startup-timeout S --health-interval S WORKER_URL [WORKER_URL ...]
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sparkops-router")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--policy", required=True)
    p.add_argument("--metrics-host", required=True)
    p.add_argument("--metrics-port", type=int, required=True)
    p.add_argument("--startup-timeout", type=int, required=True)
    p.add_argument("--health-interval", type=int, required=True)
    p.add_argument("workers", nargs="+")
    return p.parse_args(argv)


# How many failed requests take a replica out of rotation (its circuit breaker opens).
FAILURES_TO_OPEN = 3


def failover(replicas: int, health_interval_s: int) -> dict:
    """vllm-router's retry and circuit-breaker settings for `replicas` replicas: no request is
    lost to dead replicas while one replica lives, and one request alone cannot take every
    replica out of rotation.

    vllm-router retries a failed request (retry_max_retries attempts in all) on a replica its
    policy picks again, possibly the same dead one, and stops picking a replica once its circuit
    breaker opens (cb_failure_threshold failures). With its defaults (5 attempts, 10 failures) a
    just-killed replica got all of some request's attempts: in 5 of 30 trials one of the 20
    requests after the kill failed with HTTP 500 (benchmarks/router_failover.py; none of 600
    with these settings). With T failures to open and (replicas-1)*T+1 attempts, the dead
    replicas' circuits are open before a request runs out of attempts, and one request that
    fails on every replica (an error vLLM gives each) makes fewer than replicas*T failures. The
    health check (every health_interval_s, two failures) keeps a dead replica out for good, so
    an open circuit is tried again after two intervals: a false opening costs seconds, not
    vllm-router's default minute.
    """
    return {"cb_failure_threshold": FAILURES_TO_OPEN,
            "retry_max_retries": (replicas - 1) * FAILURES_TO_OPEN + 1,
            "retry_max_backoff_ms": 1000,
            "cb_timeout_duration_secs": 2 * health_interval_s}


def main(argv: list[str]) -> int:
    ns = parse(argv)
    try:
        from vllm_router.launch_router import launch_router
        from vllm_router.router_args import RouterArgs
    except ImportError as exc:
        print(f"sparkops-router: vllm-router is not installed in {sys.prefix} ({exc}); "
              "`inv install-vllm` installs it beside vLLM (native runtime); the spark image has it "
              "(`inv build`)", file=sys.stderr)
        return 2
    args = RouterArgs(
        worker_urls=ns.workers, host=ns.host, port=ns.port, policy=ns.policy,
        api_key=os.environ.get("VLLM_API_KEY") or None,
        prometheus_host=ns.metrics_host, prometheus_port=ns.metrics_port,
        # The router waits for every replica's /health before it listens: the replicas are
        # started first, and `up` allows them serving.ready_timeout_s.
        worker_startup_timeout_secs=ns.startup_timeout, worker_startup_check_interval=1,
        # A replica that died stops getting requests after two failed checks (the default
        # asks once a minute); until then retries move a request that failed on it to another.
        health_check_interval_secs=ns.health_interval, health_failure_threshold=2,
        **failover(len(ns.workers), ns.health_interval))
    print(f"sparkops-router: {ns.policy} over {len(ns.workers)} replica(s): {' '.join(ns.workers)}; "
          f"listening on {ns.host}:{ns.port}, metrics on {ns.metrics_host}:{ns.metrics_port}, "
          f"API key {'required' if args.api_key else 'NOT required'}", flush=True)
    # The router runs in a thread so that this one hears signals and says which ended it: a
    # router that stops shows why in its log (`inv logs`), not just that its process is gone.
    ended: list[str] = []

    def run() -> None:
        try:
            launch_router(args)
            ended.append("vllm-router returned")
        except BaseException as exc:  # noqa: BLE001 - said in the log, then the service ends
            ended.append(f"vllm-router failed: {type(exc).__name__}: {exc}")

    def stop(signum, _frame) -> None:
        print(f"sparkops-router: stopping on {signal.Signals(signum).name}", flush=True)
        os._exit(0)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    worker = threading.Thread(target=run, name="vllm-router", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(1.0)
    print(f"sparkops-router: {ended[0] if ended else 'vllm-router ended'}", file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

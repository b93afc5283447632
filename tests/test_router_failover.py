"""A replica killed under the replicas layout's router costs no request: the router
(sparkops/node_scripts/router.py, vllm-router started as `up` starts it) sends every request
after the kill to the replica still alive, whichever of the two died.

vllm-router's own retry and circuit-breaker defaults fail this (benchmarks/router_failover.py:
5 of 30 trials lost a request, at any of the first 16 after the kill, and 8 of 30 in a first
run by hand); with the layout's settings none may. Twelve trials: were those defaults back, all
twelve would pass with a chance of about 0.1 (0.83^12) to 0.02 (0.73^12)."""
from __future__ import annotations

import pytest

from sparkops.node_scripts.router import FAILURES_TO_OPEN, failover
from sparkops.testing.router_failover import own_router, trial


def test_retries_outlast_the_dead_replicas_and_one_request_cannot_open_every_circuit():
    for replicas in (2, 3, 8):
        s = failover(replicas, 5)
        dead_absorb = (replicas - 1) * s["cb_failure_threshold"]  # failures before all dead are out
        assert s["retry_max_retries"] > dead_absorb
        assert s["retry_max_retries"] < replicas * s["cb_failure_threshold"]
    assert failover(2, 5) == {"cb_failure_threshold": FAILURES_TO_OPEN, "retry_max_retries": 4,
                              "retry_max_backoff_ms": 1000, "cb_timeout_duration_secs": 10}


@pytest.mark.vllm
def test_a_killed_replica_costs_no_request_whichever_dies(vllm_venv):
    trials = [trial(own_router(vllm_venv), killed=n % 2) for n in range(12)]
    lost = [(t.killed, t.codes) for t in trials if t.failed]
    assert not lost, f"requests lost after a replica was killed (killed index, statuses): {lost}"
    assert all(len(t.codes) == 20 for t in trials)

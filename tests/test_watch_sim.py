"""`inv watch` and `status` on the simulated two-host cluster, vLLM (CPU build) with tensor
parallel 2 across the hosts: a worker's rank killed while serving, and a worker host whose
sshd (and with it every process of the host) is killed."""
from __future__ import annotations

import io
import json

import pytest
import requests

from sparkops.apply.ready import headers
from sparkops.base.progress import Silent
from sparkops.deploy.down import down
from sparkops.deploy.status import collect
from sparkops.deploy.up import up
from sparkops.deploy.watch import watch

pytestmark = [pytest.mark.cluster, pytest.mark.vllm, pytest.mark.slow]


def run_watch(cfg, sim_vllm, tmp_path, *, ticks: int, restart: bool) -> list[dict]:
    buf = io.StringIO()
    watch(cfg, interval=2, restart=restart, as_json=True, stall_s=60, probe_timeout=20,
          incidents=tmp_path / "incidents", load=lambda profile: sim_vllm(profile), out=buf, ticks=ticks)
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_a_worker_rank_killed_while_serving_is_seen_kept_and_restarted(sim_vllm, sim_cluster, tmp_path):
    cfg = sim_vllm()
    up(cfg, progress=Silent())
    worker = sim_cluster.host("spark-b")
    res = worker.run(["pgrep", "-f", "vllm serve"], capture_output=True, text=True)
    for pid in res.stdout.split():
        worker.run(["kill", "-9", pid])
    events = run_watch(cfg, sim_vllm, tmp_path, ticks=3, restart=True)
    samples = [e for e in events if e["event"] == "sample"]
    assert samples[0]["state"] == "failed", events  # seen at the first look (within two intervals)
    assert any("spark-b" in r for r in samples[0]["reasons"]), samples[0]
    incident = json.loads(open(next(e["file"] for e in events if e["event"] == "incident")).read())
    assert set(incident["logs"]) == {"spark-a", "spark-b"} and incident["reasons"]
    assert any(e["event"] == "restarted" for e in events), events
    assert samples[-1]["state"] == "ok", events
    done = requests.post(f"{collect(cfg)['api']['url']}/v1/completions", timeout=120,
                         headers=headers(cfg.secrets["api_key"]),
                         json={"model": "smoke", "prompt": "Hi", "max_tokens": 4})
    assert done.status_code == 200
    assert down(cfg, progress=Silent()) == []


def test_an_unreachable_worker_is_degraded_and_watch_holds_its_restarts(sim_vllm, sim_cluster, tmp_path):
    cfg = sim_vllm()
    up(cfg, progress=Silent())
    sim_cluster.host("spark-b").kill_sshd()
    try:
        data = collect(cfg)
        assert data["health"]["verdict"] == "DEGRADED"
        assert any(p.startswith("spark-b is unreachable") for p in data["health"]["problems"]), data["health"]
        events = run_watch(cfg, sim_vllm, tmp_path, ticks=1, restart=True)
        sample = next(e for e in events if e["event"] == "sample")
        assert sample["state"] == "failed" and sample["unreachable"] == ["spark-b"], sample
        hold = next(e for e in events if e["event"] == "hold")
        assert "spark-b cannot be reached" in hold["detail"]
        assert not any(e["event"] in ("restart", "restarted") for e in events)
    finally:
        sim_cluster.heal()
        down(cfg, progress=Silent())

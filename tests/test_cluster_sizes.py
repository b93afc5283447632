"""Nothing assumes exactly two nodes, and Ctrl-C during `up` leaves nothing behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT

from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Silent
from sparkops.config import load_config
from sparkops.deploy.down import down
from sparkops.deploy.status import collect
from sparkops.facts.recorded import facts_for_plan
from sparkops.plan import plan_up
from sparkops.sim.tasks import write_override

pytestmark = [pytest.mark.cluster]


@pytest.fixture
def three(sim_cluster_factory, tmp_path, monkeypatch):
    cluster = sim_cluster_factory(hosts=3)
    override = tmp_path / "sparkops.local.toml"
    monkeypatch.setenv("SPARKOPS_LOCAL", str(override))
    write_override(cluster, override)
    return cluster


def test_three_hosts_facts_status_down_and_a_two_node_plan(three):
    cfg = load_config("smoke", "sim", environ={})
    facts, note = facts_for_plan(cfg, "live")
    assert note == "" and sorted(facts) == ["spark-a", "spark-b", "spark-c"]
    assert {f.hostname for f in facts.values()} == {"spark-a", "spark-b", "spark-c"}
    plan = plan_up(cfg, facts)
    started = {node for step in plan.steps for node in step.env}
    assert started == {"spark-a", "spark-b"}  # TP=2 needs two of the three
    data = collect(cfg)
    assert [n["node"] for n in data["nodes"]] == ["spark-a", "spark-b", "spark-c"]
    assert all(n["reachable"] for n in data["nodes"])
    assert down(cfg, progress=Silent()) == []


def test_a_profile_needing_more_nodes_than_exist_is_refused(three):
    with pytest.raises(SparkopsError, match="needs 4 nodes"):
        load_config("smoke", "sim", environ={}, sets=["serving.tensor_parallel=4"])


@pytest.mark.vllm
@pytest.mark.slow
def test_sigint_during_up_leaves_nothing_running(sim_cluster, vllm_venv, tmp_path):
    override = tmp_path / "sparkops.local.toml"
    write_override(sim_cluster, override)
    env = {**os.environ, "SPARKOPS_LOCAL": str(override), "SPARKOPS_HOME": str(ROOT)}
    base = [sys.executable, "-m", "invoke"]
    venv = ["--set", f"cluster.venv={json.dumps(str(vllm_venv))}"]
    built = subprocess.run(base + ["smoke-model", "--cluster", "sim"], cwd=ROOT, env=env,
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    proc = subprocess.Popen(base + ["up", "--profile", "smoke", "--cluster", "sim", *venv], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    worker = sim_cluster.host("spark-b")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if worker.run(["pgrep", "-f", "vllm serve"], capture_output=True).returncode == 0:
            break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("vLLM never started on the worker:\n" + proc.communicate()[0])
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0
    assert "interrupted" in output
    for host in sim_cluster.hosts:
        assert host.run(["pgrep", "-f", "vllm"], capture_output=True).returncode == 1, host.name

"""`inv check` on the simulated two-host cluster: real sshd per host, the RoCE-named veth
"cable" (169.254.100.11/.12, MTU 9000), failures inflicted on a host and healed after; and
the all-reduce test with gloo across the two hosts over that link."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomlkit

from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Silent
from sparkops.checks.runner import run_checks
from sparkops.config import load_config
from sparkops.deploy.up import up
from sparkops.sim.tasks import write_override

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sim(sim_cluster, tmp_path_factory, monkeypatch_module):
    override = tmp_path_factory.mktemp("sim-check") / "sparkops.local.toml"
    monkeypatch_module.setenv("SPARKOPS_LOCAL", str(override))
    write_override(sim_cluster, override)

    def make(*sets: str):
        return load_config("smoke", "sim", sets=list(sets), environ={})
    return make


def network_report(cfg):
    return run_checks(cfg, ["network"], profile=None, progress=Silent())


def named(report, name, node=None):
    return [c for c in report.checks if c.name == name and (node is None or c.node == node)]


def test_network_all_ok(sim, sim_cluster):
    report = network_report(sim())
    assert report.status == "ok", [c.render() for c in report.checks if c.status != "ok"]
    names = {(c.name, c.node) for c in report.checks}
    for node in ("spark-a", "spark-b"):
        assert {("roce.link", node), ("roce.hcas", node), ("reach.ping", node), ("reach.mtu_path", node),
                ("reach.ssh", node), ("ports", node)} <= names
    assert named(report, "roce.subnet")[0].message.startswith("one subnet 169.254.0.0/16")
    assert named(report, "reach.ping", "spark-a")[0].message == \
        "reaches spark-b (169.254.100.12) over enp1s0f1np1"


def test_roce_link_down_fails_with_its_fix(sim, sim_cluster):
    sim_cluster.host("spark-b").set_roce_up(False)
    try:
        report = network_report(sim())
    finally:
        sim_cluster.heal()
    (link,) = named(report, "roce.link", "spark-b")
    assert link.status == "fail" and link.message == "no RoCE interface is up with an IPv4 address"
    assert "ip addr add" in link.fix
    assert "RoCE link: rocep1s0f1 port 1 ==> enp1s0f1np1 (Down)" in link.evidence["observed"]


def test_mtu_mismatch_fails_in_facts_and_on_the_path(sim, sim_cluster):
    sim_cluster.host("spark-b").set_mtu(1500)
    try:
        report = network_report(sim())
    finally:
        sim_cluster.heal()
    (mtu,) = named(report, "roce.mtu")
    assert mtu.status == "fail" and mtu.message == "MTU differs between nodes: spark-a=9000, spark-b=1500"
    (path,) = named(report, "reach.mtu_path", "spark-a")
    assert path.status == "fail" and "do not get through to spark-b" in path.message
    assert not named(report, "reach.mtu_path", "spark-b")  # MTU 1500 there: no 9000-byte test
    assert named(report, "reach.ping", "spark-a")[0].status == "ok"  # small packets still pass


def test_taken_port_fails_check_and_refuses_up(sim, sim_cluster):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKOPS_") or k == "SPARKOPS_LOCAL"}
    sim_cluster.host("spark-b").occupy_port(29501)
    try:
        report = network_report(sim())
        done = subprocess.run([sys.executable, "-m", "invoke", "check", "--cluster", "sim", "--network",
                               "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        with pytest.raises(SparkopsError) as err:
            up(sim(), progress=Silent())
    finally:
        sim_cluster.heal()  # releases the port
    (port,) = named(report, "ports", "spark-b")
    assert port.status == "fail" and port.message == "port 29501 is already in use"
    assert "ss -ltnp" in port.fix
    assert done.returncode == 1, done.stderr
    data = json.loads(done.stdout)
    assert data["status"] == "fail" and data["summary"]["fail"] == 1
    # `up` runs the same checks in its preflight and starts nothing.
    assert "preflight" in err.value.render() and "[spark-b] ports: port 29501 is already in use" in err.value.render()


@pytest.mark.vllm
def test_gloo_allreduce_across_the_two_hosts(sim, sim_cluster, vllm_venv):
    cfg = sim(f"cluster.venv={json.dumps(str(vllm_venv))}")
    report = run_checks(cfg, ["nccl"], profile=None, progress=Silent())
    assert report.status == "ok", [c.render() for c in report.checks]
    (bw,) = named(report, "nccl.allreduce")
    ev = bw.evidence
    assert ev["backend"] == "gloo" and ev["world_size"] == 2 and ev["master"] == "169.254.100.11:29501"
    assert [r["bytes"] for r in ev["results"]] == [1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20]
    assert all(r["correct"] and r["busbw_gbps"] > 0 for r in ev["results"])
    assert ev["peak_busbw_gbps"] >= 0.05
    # The environment `up` gives vLLM: gloo bound to the RoCE interface on both hosts.
    assert {n: e["GLOO_SOCKET_IFNAME"] for n, e in ev["env"].items()} == \
        {"spark-a": "enp1s0f1np1", "spark-b": "enp1s0f1np1"}
    assert ev["env"]["spark-b"]["VLLM_HOST_IP"] == "169.254.100.12"
    (transport,) = named(report, "nccl.transport")
    assert transport.message == "gloo over TCP on enp1s0f1np1 (CPU cluster: no NCCL)"
    for host in (sim_cluster.host("spark-a"), sim_cluster.host("spark-b")):  # nothing left running
        assert host.run(["pgrep", "-f", "allreduce.py"]).stdout.strip() == ""


@pytest.mark.vllm
def test_a_node_s_own_env_reaches_its_all_reduce_rank(sim_cluster, vllm_venv, tmp_path, monkeypatch):
    """`cluster.nodes[].env` of the cluster file reaches the rank on that node, as it reaches
    vLLM there: the test and `up` build the environment with the same function. Each rank
    echoes what it saw (nccl.env)."""
    override = tmp_path / "sparkops.local.toml"
    monkeypatch.setenv("SPARKOPS_LOCAL", str(override))
    write_override(sim_cluster, override)
    doc = tomlkit.parse(override.read_text())
    doc["clusters"]["sim"]["nodes"][1]["env"]["SPARKOPS_TEST_MARK"] = "only-on-spark-b"
    override.write_text(tomlkit.dumps(doc))
    cfg = load_config("smoke", "sim", sets=[f"cluster.venv={json.dumps(str(vllm_venv))}"], environ={})
    report = run_checks(cfg, ["nccl"], profile=None, progress=Silent())
    assert report.status == "ok", [c.render() for c in report.checks]
    env = {c.node: c for c in named(report, "nccl.env")}
    assert set(env) == {"spark-a", "spark-b"} and all(c.status == "ok" for c in env.values())
    assert env["spark-b"].evidence["seen"]["1"]["SPARKOPS_TEST_MARK"] == "only-on-spark-b"
    assert "SPARKOPS_TEST_MARK" not in env["spark-a"].evidence["seen"]["0"]
    # the sim cluster's own per-node variable: each host's rank on a CPU of its own
    binds = [n["env"]["VLLM_CPU_OMP_THREADS_BIND"] for n in cfg.nodes]
    assert [env[n].evidence["seen"][r]["VLLM_CPU_OMP_THREADS_BIND"] for n, r in (("spark-a", "0"), ("spark-b", "1"))] \
        == binds
    # and `up` plans the very same per-node environment for vLLM
    from sparkops.facts.session import cluster_session
    from sparkops.plan import plan_up
    with cluster_session(cfg) as session:
        plan = plan_up(cfg, session.facts)
    (start_workers,) = [s for s in plan.steps if s.name == "start-workers"]
    assert start_workers.env["spark-b"]["SPARKOPS_TEST_MARK"] == "only-on-spark-b"


@pytest.mark.vllm
def test_gloo_allreduce_in_containers(sim, sim_docker, vllm_venv):
    """The docker runtime: each rank is `docker run --rm` of the cluster's image with the
    serving flags, the script mounted read-only from the node's run directory."""
    from sparkops.runtimes.build import build
    cfg = sim('cluster.runtime="docker"')
    build(cfg, Silent())
    report = run_checks(cfg, ["nccl"], profile=None, progress=Silent())
    assert report.status == "ok", [c.render() for c in report.checks]
    (bw,) = named(report, "nccl.allreduce")
    assert bw.evidence["backend"] == "gloo" and bw.evidence["peak_busbw_gbps"] > 0
    for host in sim_docker.hosts:  # --rm: no container left
        res = host.run(["docker", "-H", f"unix://{host.docker_sock}", "ps", "-aq", "--filter",
                        "name=sparkops-nccl-test"])
        assert res.stdout.strip() == ""

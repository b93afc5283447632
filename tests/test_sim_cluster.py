"""The simulated cluster itself: real sshd, real namespaces, real Docker engines."""


from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest

from sparkops.sim import cleanup, procs
from sparkops.sim import layout as L
from sparkops.sim.cluster import STANDINS_DIR, SimCluster, build
from sparkops.sim.docker import BASE_IMAGE

ROOT = Path(__file__).resolve().parents[1]


def jumbo_ping(dst: str, deadline: int = 2) -> str:
    """8972 + 28 header bytes = 9000, unfragmented; -w: an overall deadline (-W alone would
    also wait out ARP retries)."""
    return f"ping -c1 -w{deadline} -M do -s 8972 {dst}"


def ssh(cluster: SimCluster, host, command: str, timeout: float = 30):
    """Run a shell command on a host with the OpenSSH client and the generated ssh_config."""
    return subprocess.run(cluster.ssh_argv(host, command), capture_output=True, text=True,
                          timeout=timeout, check=False)


_CONNS: dict = {}


@pytest.fixture(scope="module", autouse=True)
def _close_connections():
    yield
    for conn in _CONNS.values():
        conn.close()
    _CONNS.clear()


def sh(cluster: SimCluster, host, command: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a shell command on a host over a kept-open fabric connection (an OpenSSH client
    per command costs ~0.2 s of key exchange)."""
    host = cluster.host(host) if isinstance(host, str) else host
    key = (cluster.slot, host.name, host.host_key)
    conn = _CONNS.get(key)
    if conn is None or not conn.is_connected:  # new, or its host was restarted
        conn = _CONNS[key] = cluster.connection(host)
    r = conn.run(command, hide=True, warn=True, in_stream=False, timeout=timeout)
    return subprocess.CompletedProcess(command, r.exited, r.stdout, r.stderr)


def nothing_left(slot: int) -> dict[str, list[str]]:
    """Everything of `slot` still on the machine, checked independently of the harness."""
    def out(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    netns, links = out("ip", "netns", "list"), json.loads(out("ip", "-j", "link"))
    slot_dir = str(L.slot_dir(slot))
    ps = out("ps", "-eo", "stat=,args=")
    return {
        "netns": [n for n in netns.split() if n.startswith(L.netns_prefix(slot))],
        "links": [k["ifname"] for k in links if L.owns_link(slot, k["ifname"])],
        "mounts": [m for m in Path("/proc/mounts").read_text().splitlines()
                   if slot_dir in m or L.netns_prefix(slot) in m],
        "processes": [p for p in ps.splitlines() if slot_dir in p and not p.startswith("Z")],
        "files": [slot_dir] if Path(slot_dir).exists() else [],
    }


@pytest.mark.cluster
def test_hosts_reachable_with_strict_host_keys(sim_cluster, tmp_path):
    for host in sim_cluster.hosts:
        with sim_cluster.connection(host) as conn:
            assert conn.run("hostname", hide=True, in_stream=False).stdout.strip() == host.name
        assert ssh(sim_cluster, host, "hostname").stdout.strip() == host.name
    # A key the known_hosts does not vouch for is refused, not added.
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    conn = sim_cluster.connection("spark-a")
    conn.client = paramiko.SSHClient()
    conn.client.load_host_keys(str(empty))
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException):
        conn.open()


@pytest.mark.cluster
def test_hosts_have_own_hostname_pids_home_and_tmp(sim_cluster):
    a, b = sim_cluster.hosts
    started = sh(sim_cluster, a, "nohup setsid sleep 300 >/dev/null 2>&1 </dev/null & echo $!")
    pid = started.stdout.strip()
    try:
        # $! is the forked shell until it has exec'd nohup, then setsid, then sleep: wait for it.
        comm = sh(sim_cluster, a, f"for i in $(seq 50); do c=$(cat /proc/{pid}/comm); "
                  '[ "$c" = sleep ] && break; sleep 0.1; done; echo "$c"').stdout.strip()
        assert comm == "sleep"
        assert sh(sim_cluster, b, "pgrep -x sleep").returncode == 1  # no such process on b
        for host in (a, b):
            assert "sshd" in sh(sim_cluster, host, "cat /proc/1/cmdline").stdout
        assert sh(sim_cluster, a, "touch ~/only-a /tmp/only-a").returncode == 0
        assert sh(sim_cluster, b, "ls ~/only-a /tmp/only-a").returncode != 0
        assert (a.home / "only-a").exists() and (a.tmp / "only-a").exists()
    finally:
        sh(sim_cluster, a, f"kill {pid}")


@pytest.mark.cluster
def test_hosts_environment(sim_cluster):
    for host in sim_cluster.hosts:
        out = sh(sim_cluster, host, 'echo "$PATH"; echo "$DOCKER_HOST"; echo "$SPARKOPS_SIM_HOST"; '
                 f'{sys.executable} -c "import fabric; print(42)"').stdout.splitlines()
        assert out[0].split(":")[0] == str(STANDINS_DIR)
        assert out[1] == f"unix://{host.docker_sock}"
        assert out[2] == host.name
        assert out[3] == "42"  # the controller's Python (under /root) resolves on the host


@pytest.mark.cluster
def test_interfaces_and_roce_jumbo_ping(sim_cluster):
    a, b = sim_cluster.hosts
    for host in (a, b):
        links = {k["ifname"]: k for k in json.loads(sh(sim_cluster, host, "ip -j addr").stdout)}
        mgmt = [x["local"] for x in links[L.MGMT_IF]["addr_info"] if x["family"] == "inet"]
        roce = [x["local"] for x in links[L.ROCE_IF]["addr_info"] if x["family"] == "inet"]
        assert (mgmt, roce) == ([host.mgmt_ip], [host.roce_ip])
        assert links[L.ROCE_IF]["mtu"] == links[L.ROCE_TWIN_IF]["mtu"] == L.ROCE_MTU
        assert links[L.ROCE_TWIN_IF]["operstate"] == "UP"
    assert sh(sim_cluster, a, jumbo_ping(b.roce_ip)).returncode == 0
    assert sh(sim_cluster, b, jumbo_ping(a.roce_ip)).returncode == 0


@pytest.mark.cluster
def test_roce_failures(sim_cluster):
    a, b = sim_cluster.hosts
    ping_b, ping_b_fails = jumbo_ping(b.roce_ip), jumbo_ping(b.roce_ip, deadline=1)
    try:
        b.set_mtu(1500)
        assert sh(sim_cluster, a, ping_b_fails).returncode != 0
        sim_cluster.heal()
        assert sh(sim_cluster, a, ping_b).returncode == 0
        b.set_roce_up(False)
        state = json.loads(sh(sim_cluster, b, f"ip -j link show {L.ROCE_IF}").stdout)[0]
        assert state["operstate"] == "DOWN"
        assert sh(sim_cluster, a, ping_b_fails).returncode != 0
    finally:
        sim_cluster.heal()
    assert sh(sim_cluster, a, ping_b).returncode == 0


@pytest.mark.cluster
def test_occupy_port(sim_cluster):
    b = sim_cluster.host("spark-b")
    bind = f'{sys.executable} -c "import socket; socket.socket().bind((\\"\\", 8000))"'
    try:
        with b.occupy_port(8000):
            assert sh(sim_cluster, b, bind).returncode != 0
            socket.create_connection((b.mgmt_ip, 8000), timeout=2).close()
        assert sh(sim_cluster, b, bind).returncode == 0
    finally:
        sim_cluster.heal()


@pytest.mark.cluster
def test_kill_sshd_ends_every_process_of_the_host(sim_cluster):
    a, b = sim_cluster.hosts
    try:
        sh(sim_cluster, b, "nohup setsid sleep 300 >/dev/null 2>&1 </dev/null &")
        sleeper = procs.wait_for(lambda: [p for p in b.pids() if _comm(p) == "sleep"], 5)
        assert sleeper
        b.kill_sshd()
        assert not b.is_up() and b.pids() == []
        assert not any(procs.is_alive(p) for p in sleeper)
        assert ssh(sim_cluster, b, "true", timeout=15).returncode == 255  # connection refused
        assert sh(sim_cluster, a, "hostname").stdout.strip() == "spark-a"  # a is untouched
    finally:
        sim_cluster.heal()
    assert sh(sim_cluster, b, "pgrep -x sleep || echo none").stdout.strip() == "none"


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@pytest.mark.cluster
def test_docker_engine_per_host(sim_docker):
    a, b = sim_docker.hosts
    for host in (a, b):
        run = sh(sim_docker, host, f"docker run --rm --network host {BASE_IMAGE} hostname", 60)
        assert run.stdout.strip() == host.name, run.stderr
    assert sh(sim_docker, a, f"docker run -d --name probe {BASE_IMAGE} sleep 300").returncode == 0
    try:
        assert sh(sim_docker, a, "docker ps -q").stdout.strip()
        assert sh(sim_docker, b, "docker ps -q").stdout.strip() == ""  # engines are separate
    finally:
        sh(sim_docker, a, "docker rm -f probe")


@pytest.mark.cluster
def test_three_hosts_and_teardown_leaves_nothing(sim_cluster_factory):
    cluster = sim_cluster_factory(hosts=3)
    a, b, c = cluster.hosts
    assert [sh(cluster, h, "hostname").stdout.strip() for h in cluster.hosts] == [
        "spark-a", "spark-b", "spark-c"]
    for src, dst in ((a, c), (c, b), (b, a)):  # through the RoCE switch
        assert sh(cluster, src, jumbo_ping(dst.roce_ip)).returncode == 0
    assert any(nothing_left(cluster.slot).values())
    cluster.teardown()
    assert not any(nothing_left(cluster.slot).values()), nothing_left(cluster.slot)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "sparkops.sim", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def _free_slot() -> int:
    slot, fd = cleanup.lock(wait=30)
    os.close(fd)
    return slot


@pytest.mark.cluster
def test_build_removes_leftovers_of_a_crashed_run():
    slot = _free_slot()
    assert _cli("up", "--slot", str(slot)).returncode == 0
    # The owner dies without tearing down, as a killed test session would.
    holder = int(L.holder_path(slot).read_text())
    procs.kill_all([holder], signal.SIGKILL)
    assert nothing_left(slot)["netns"]
    with build(hosts=2, slot=slot) as cluster:
        assert sh(cluster, "spark-b", "hostname").stdout.strip() == "spark-b"
    assert not any(nothing_left(slot).values()), nothing_left(slot)


@pytest.mark.cluster
def test_cli_up_status_down():
    slot = _free_slot()
    up = _cli("up", "--slot", str(slot), "--hosts", "2")
    assert up.returncode == 0, up.stderr
    try:
        assert f"netns {L.netns_name(slot, 1)}" in _cli("status").stdout
        cluster = SimCluster.load(slot)
        assert sh(cluster, "spark-a", "hostname").stdout.strip() == "spark-a"
    finally:
        down = _cli("down", "--slot", str(slot))
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(nothing_left(slot).values()), nothing_left(slot)


@pytest.mark.parametrize("ci, outcome",
                         [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_missing_tools_skip_except_under_ci(monkeypatch, ci, outcome):
    import sim_fixtures

    monkeypatch.setattr(sim_fixtures, "missing_requirements", lambda docker=False: ["no sshd"])
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="no sshd"):
        sim_fixtures.require_sim()

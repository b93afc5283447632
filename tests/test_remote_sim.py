"""Running argv on a real sshd (a simulated host): a group over SSH keeps every node's outcome,
and a followed stream (`inv logs --follow`) ends when asked, remote command included."""
from __future__ import annotations

import threading
import time

import pytest

from sparkops.base.errors import SparkopsError
from sparkops.remote.connection import NodeConn
from sparkops.remote.group import NodeGroup

pytestmark = [pytest.mark.cluster]


def ssh_group(cluster) -> NodeGroup:
    ssh = {"connect_timeout_s": 5, "command_timeout_s": 30, "strict_host_keys": True,
           "known_hosts": str(cluster.known_hosts_path)}
    return NodeGroup.for_nodes(cluster.nodes(), ssh)


def test_a_group_over_ssh_names_every_failed_host(sim_cluster):
    group = ssh_group(sim_cluster)
    try:
        def work(conn: NodeConn) -> str:
            res = conn.run(["sh", "-c", 'hostname; [ "$(hostname)" = spark-a ] || exit 4'], timeout=30)
            if not res.ok:
                raise SparkopsError(f"exited {res.rc}", host=conn.name, log_tail=res.tail())
            return res.stdout.strip()
        results = group.map(work)
    finally:
        group.close()
    assert results.succeeded == {"spark-a": "spark-a"} and list(results.failed) == ["spark-b"]
    with pytest.raises(SparkopsError) as caught:
        results.raise_failures("the probe")
    assert caught.value.host == "spark-b" and caught.value.log_tail == ["spark-b"]


def test_follow_over_ssh_ends_with_the_remote_command_when_asked(sim_cluster):
    host = sim_cluster.host("spark-b")
    group = ssh_group(sim_cluster)
    conn = group["spark-b"]
    lines: list[str] = []
    stop = threading.Event()
    follower = threading.Thread(target=conn.follow, args=(
        ["sh", "-c", "echo one; echo two; exec sleep 61"], lines.append, stop))
    try:
        follower.start()
        deadline = time.monotonic() + 15
        while len(lines) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lines == ["one", "two"]
        assert host.run(["pgrep", "-f", "sleep 61"]).stdout.strip()  # running there
        stop.set()
        follower.join(timeout=10)
        assert not follower.is_alive()
        deadline = time.monotonic() + 10  # the pty's hangup ends the remote command
        while host.run(["pgrep", "-f", "sleep 61"]).stdout.strip() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert host.run(["pgrep", "-f", "sleep 61"]).stdout.strip() == ""
    finally:
        stop.set()
        group.close()


def test_a_lock_held_over_ssh_is_named_and_freed_when_its_holder_is_killed(sim_cluster, tmp_path):
    """node_scripts/lock.py on a real sshd: a second holder hears who holds it, and a holder
    killed with SIGKILL (its SSH connection dropped without a word) frees it within seconds."""
    import json
    import signal
    import subprocess
    import sys

    from sparkops.node_scripts import source

    node = sim_cluster.nodes()[0]
    ssh = {"connect_timeout_s": 5, "command_timeout_s": 30, "strict_host_keys": True,
           "known_hosts": str(sim_cluster.known_hosts_path)}
    script = ["sh", "-c", 'exec python3 -I -S -c "$0" "$@"', source("lock.py"), "~/sparkops-test/op.lock"]
    holder_code = (
        "import json, sys, time\n"
        "from sparkops.remote.connection import NodeConn\n"
        "node, ssh, argv = json.loads(sys.argv[1])\n"
        "held = NodeConn(node, ssh).hold(argv)\n"
        "print(held.readline(30), flush=True)\n"
        "time.sleep(60)\n")
    argv = [*script, json.dumps({"verb": "up", "pid": 4242})]
    holder = subprocess.Popen([sys.executable, "-c", holder_code, json.dumps([node, ssh, argv])],
                              stdout=subprocess.PIPE, text=True)
    conn = NodeConn(node, ssh)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        second = conn.hold([*script, json.dumps({"verb": "down"})])
        busy = second.readline(30)
        assert busy is not None and busy.startswith("busy ") and json.loads(busy[5:])["pid"] == 4242
        second.release()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        deadline = time.monotonic() + 20
        while True:  # sshd notices the dead connection, closes the script's stdin, the lock goes
            third = conn.hold([*script, json.dumps({"verb": "down"}), "--wait", "1"])
            line = third.readline(30)
            while line is not None and line.startswith("busy"):
                line = third.readline(30)
            third.release()
            if line == "locked" or time.monotonic() > deadline:
                break
        assert line == "locked"
    finally:
        holder.kill()
        holder.wait()
        conn.close()


def test_a_lock_held_over_a_link_that_dies_is_freed_when_its_heartbeat_stops(sim_cluster):
    """The head's LAN link goes down under a holder that lives on: no FIN, no RST, so sshd keeps
    the session (and the lock script's stdin) open for as long as TCP keeps trying. The missing
    heartbeat frees the lock all the same, within the limit."""
    import subprocess

    from sparkops.apply.lock import Heartbeat
    from sparkops.node_scripts import python_argv
    from sparkops.sim import layout
    from sparkops.sim.host import enter

    head = sim_cluster.hosts[0]
    lan = layout.root_veth(sim_cluster.slot, "lan", 0)
    path = "/tmp/sparkops-test-heartbeat.lock"  # the host's own /tmp

    def take_there(wait: float) -> list[str]:
        """The lock script run on the head itself, not over the LAN: the lines it says until it
        holds the lock, gives up or times out."""
        there = subprocess.Popen([*enter(head.init_pid()), *python_argv("lock.py", path, "{}", "--wait", str(wait))],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        lines = [there.stdout.readline().strip()]  # type: ignore[union-attr]
        while lines[-1].startswith("busy"):
            lines.append(there.stdout.readline().strip())  # type: ignore[union-attr]
        there.kill()
        there.wait()
        return [line.split()[0] if line else "" for line in lines]

    conn = NodeConn(sim_cluster.nodes()[0], {"connect_timeout_s": 5, "strict_host_keys": True,
                                             "known_hosts": str(sim_cluster.known_hosts_path)})
    held = conn.hold(python_argv("lock.py", path, '{"verb": "up"}', "--silence", "2"))
    heart = Heartbeat(held, 0.3, head.name, None)
    try:
        assert held.readline(30) == "locked"
        time.sleep(3)  # past the limit, beating
        assert take_there(0.5) == ["busy", "timeout"]
        subprocess.run(["ip", "link", "set", lan, "down"], check=True)
        t0 = time.monotonic()
        assert take_there(25) == ["busy", "locked"]
        assert time.monotonic() - t0 < 20  # the limit and a beat; without the heartbeat: hours
    finally:
        subprocess.run(["ip", "link", "set", lan, "up"], check=False)
        heart.stop()
        conn.close()
        sim_cluster.heal()

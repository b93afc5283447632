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

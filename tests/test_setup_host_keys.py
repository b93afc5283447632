"""`inv setup --trust-host-keys` records a node's real SSH host key, after which a strict
connection to it works; before it, the connection is refused with the fix."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from sparkops.base.errors import ConnectError
from sparkops.config import load_config
from sparkops.remote.connection import NodeConn

pytestmark = [pytest.mark.cluster]


def test_unknown_host_key_is_refused_then_recorded_by_setup(sim_cluster, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    worker = sim_cluster.host("spark-b")
    override = tmp_path / "sparkops.local.toml"
    env = {**os.environ, "HOME": str(home), "SPARKOPS_LOCAL": str(override), "SPARKOPS_HOME": str(ROOT)}
    ssh = {"connect_timeout_s": 5, "command_timeout_s": 30, "strict_host_keys": True,
           "known_hosts": str(home / ".ssh" / "known_hosts")}
    node = {"name": "spark-b", "host": worker.mgmt_ip, "user": "root", "key": str(sim_cluster.key_path)}

    (home / ".ssh").mkdir()
    (home / ".ssh" / "known_hosts").write_text("")
    with pytest.raises(ConnectError) as err:
        NodeConn(node, ssh).connect()
    assert "not in known_hosts" in err.value.render() and "--trust-host-keys" in err.value.render()

    done = subprocess.run([sys.executable, "-m", "invoke", "setup", "--cluster", "spark-pair",
                           "--worker", worker.mgmt_ip, "--user", "root", "--trust-host-keys", "--yes"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "host keys of " + worker.mgmt_ip in done.stdout and "SHA256:" in done.stdout
    conn = NodeConn(node, ssh)
    try:
        assert conn.run(["hostname"], timeout=30).stdout.strip() == "spark-b"
    finally:
        conn.close()
    monkeypatch.setenv("SPARKOPS_LOCAL", str(override))
    cfg = load_config("smoke", "spark-pair", environ={})
    assert json.dumps(cfg.nodes[1]).count(worker.mgmt_ip) == 1

"""The distributed path on the simulated two-host cluster when something breaks: real sshd per
host, real vLLM (CPU build) with tensor parallel 2 across both hosts over the 169.254 "cable".
Serving, chatting, status, logs and down as the owner of a pair does them:
test_owner_pair_sim.py."""
from __future__ import annotations

import threading
import time

import pytest

from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Silent
from sparkops.deploy.down import down
from sparkops.deploy.up import up

pytestmark = [pytest.mark.cluster, pytest.mark.vllm, pytest.mark.slow]


def vllm_pids(cluster, names=("spark-a", "spark-b")) -> dict[str, list[int]]:
    out = {}
    for host in (cluster.host(n) for n in names):
        res = host.run(["pgrep", "-f", "vllm"], capture_output=True, text=True)
        out[host.name] = [int(p) for p in res.stdout.split()]
    return out


def test_worker_sshd_killed_during_up_rolls_back_and_names_the_worker(sim_vllm, sim_cluster):
    cfg = sim_vllm()
    worker = sim_cluster.host("spark-b")

    def kill_later():
        time.sleep(4)
        worker.kill_sshd()
    killer = threading.Thread(target=kill_later)
    killer.start()
    try:
        with pytest.raises(SparkopsError) as err:
            up(cfg, progress=Silent())
        killer.join()
        assert "spark-b" in err.value.render()
        assert vllm_pids(sim_cluster, ["spark-a"])["spark-a"] == []
    finally:
        killer.join()
        sim_cluster.heal()


def test_down_with_one_host_unreachable_cleans_the_other(sim_vllm, sim_cluster):
    cfg = sim_vllm()
    up(cfg, progress=Silent())
    sim_cluster.host("spark-b").kill_sshd()
    try:
        problems = down(cfg, progress=Silent())
        assert len(problems) == 1 and "spark-b" in problems[0]
        assert vllm_pids(sim_cluster, ["spark-a"])["spark-a"] == []
    finally:
        sim_cluster.heal()

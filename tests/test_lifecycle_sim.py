"""The whole distributed path on the simulated two-host cluster: real sshd per host, real
vLLM (CPU build) with tensor parallel 2 across both hosts over the 169.254 "cable"."""
from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from sparkops.apply.ready import headers
from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Silent
from sparkops.deploy.down import down
from sparkops.deploy.logs import show
from sparkops.deploy.status import collect
from sparkops.deploy.up import up

pytestmark = [pytest.mark.cluster, pytest.mark.vllm, pytest.mark.slow]


def vllm_pids(cluster, names=("spark-a", "spark-b")) -> dict[str, list[int]]:
    out = {}
    for host in (cluster.host(n) for n in names):
        res = host.run(["pgrep", "-f", "vllm"], capture_output=True, text=True)
        out[host.name] = [int(p) for p in res.stdout.split()]
    return out


def test_up_tp2_across_two_hosts_chat_status_logs_down(sim_vllm, sim_cluster, capsys):
    cfg = sim_vllm()
    result = up(cfg, progress=Silent())
    assert result.url.startswith("http://10.77.")
    with requests.post(f"{result.url}/v1/chat/completions", stream=True, timeout=120,
                       headers=headers(cfg.secrets["api_key"]), json={
            "model": "smoke", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}) as resp:
        chunks = [json.loads(l[6:]) for l in resp.iter_lines() if l.startswith(b"data: {")]
    assert chunks[-1]["usage"]["completion_tokens"] == 8

    data = collect(cfg)
    assert data["api"]["ready"]
    assert [n["services"]["vllm"]["running"] for n in data["nodes"]] == [True, True]
    assert all(vllm_pids(sim_cluster).values())

    import io
    buffer = io.StringIO()
    show(cfg, node=None, lines=5, follow=False, out=buffer)
    prefixes = {line.split("]")[0] + "]" for line in buffer.getvalue().splitlines()}
    assert {"[spark-a:vllm]", "[spark-b:vllm]"} <= prefixes

    assert down(cfg, progress=Silent()) == []
    assert vllm_pids(sim_cluster) == {"spark-a": [], "spark-b": []}


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

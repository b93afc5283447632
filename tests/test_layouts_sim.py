"""Layouts on the simulated two-host cluster (real sshd per host, vLLM's CPU build, the smoke
model): a replica per host with vLLM's data parallel, each replica proven to serve requests
(its own counter in the head's /metrics, and its own process on its own host), and
`bench-all --layouts tp,dp,replicas` (the replicas behind vllm-router), whose report states
the crossover with the numbers of its matrix."""
from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
import requests

from sparkops.apply.ready import headers, replica_requests
from sparkops.base.progress import Silent
from sparkops.bench.bench_all import bench_all
from sparkops.bench.report.report import report
from sparkops.deploy.down import down
from sparkops.deploy.status import collect, render
from sparkops.deploy.up import up

pytestmark = [pytest.mark.cluster, pytest.mark.vllm, pytest.mark.slow]

DP2 = ("serving.tensor_parallel=1", "serving.data_parallel=2")
# A serving sweep small enough for CI: concurrency 1 and 4, two runs of 16 tokens.
TINY = ["bench.suites.tiny.kind=\"serving\"", "bench.suites.tiny.concurrency=[1, 4]", "bench.suites.tiny.runs=2",
        "bench.suites.tiny.max_tokens=16", "bench.suites.tiny.prompts_per_stream=1", "bench.suites.tiny.min_prompts=4",
        "bench.suites.tiny.description=\"CI\""]


def processes(host) -> list[str]:
    res = host.run(["ps", "-eww", "-o", "args="], capture_output=True, text=True)
    return [line for line in res.stdout.splitlines() if "vllm serve" in line or line.startswith("VLLM::")]


def test_up_dp2_serves_a_replica_on_each_host_and_down_leaves_nothing(sim_vllm, sim_cluster):
    cfg = sim_vllm(sets=DP2)
    result = up(cfg, progress=Silent())
    head, worker = sim_cluster.host("spark-a"), sim_cluster.host("spark-b")
    # Each host runs its own replica: the head the API and engine 0, the worker engine 1 headless.
    (head_serve,) = [p for p in processes(head) if "vllm serve" in p]
    (worker_serve,) = [p for p in processes(worker) if "vllm serve" in p]
    assert "--headless" not in head_serve and "--data-parallel-size-local 1" in head_serve
    assert re.search(r"--data-parallel-start-rank 1 --headless$", worker_serve)
    assert any(p.startswith("VLLM::EngineCore") for p in processes(worker))  # the replica's engine is there
    # `up` returned only once both had served (readiness); now a burst: both engines take requests.
    before = replica_requests(result.url)
    assert set(before) == {0, 1} and all(before.values())

    def chat(i: int) -> int:
        done = requests.post(f"{result.url}/v1/chat/completions", timeout=120,
                             headers=headers(cfg.secrets["api_key"]), json={
            "model": "smoke", "messages": [{"role": "user", "content": f"Hi {i}"}], "max_tokens": 4})
        return done.status_code
    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(chat, range(16))) == {200}
    after = replica_requests(result.url)
    assert sum(after.values()) - sum(before.values()) == 16
    assert after[0] > before[0] and after[1] > before[1], (before, after)

    data = collect(cfg)
    assert data["health"]["verdict"] == "READY"
    assert "backend dp, nodes spark-a, spark-b, 2 replicas" in render(data)
    assert [n["services"]["vllm"]["running"] for n in data["nodes"]] == [True, True]
    assert down(cfg, progress=Silent()) == []
    assert processes(head) == [] and processes(worker) == []


def test_bench_all_layouts_then_report_states_the_crossover(sim_vllm, sim_cluster, tmp_path):
    results = tmp_path / "results"
    # One profile in three layouts (bench-all over several profiles: test_bench_sim.py; solo is
    # the tp layout's single-node case, and its plan is tested without a cluster). The sim's
    # head is reached over its LAN address: the router may listen there (checks/api.py).
    outcomes = bench_all(profiles=["smoke"], cluster="sim",
                         sets=[*sim_vllm.sets, *TINY, "router.allow_unauthenticated_admin=true"],
                         layouts=["tp", "dp", "replicas"], suite="tiny", results=results, progress=Silent())
    assert [(o.profile, o.layout, o.status) for o in outcomes] == [
        ("smoke", layout, "ok") for layout in ("tp", "dp", "replicas")], outcomes
    head, worker = sim_cluster.host("spark-a"), sim_cluster.host("spark-b")
    assert processes(head) == [] and processes(worker) == []  # the last one stopped

    _, files, _ = report(results, tmp_path / "report")
    csv = pd.read_csv(tmp_path / "report" / "compare.csv")
    assert sorted(zip(csv["profile"], csv["layout"])) == sorted(
        ("smoke", layout) for layout in ("DP=2", "2 replicas + router", "TP=2"))
    sentences = (tmp_path / "report" / "layouts.md").read_text()
    for profile in ("smoke",):
        (line,) = [s for s in sentences.splitlines() if s.startswith(f"- {profile}: ")]
        rows = csv[csv["profile"] == profile].set_index("layout")
        # Every "X ... by N% over Y at C" in the sentence is the matrix's out tok/s at cC.
        names = r"(TP=2|DP=2|2 replicas \+ router)"
        claims = re.findall(names + r"[^;]*?by (\d+)% over " + names + r" at (\d+)", line)
        assert claims, line
        for winner, pct, loser, c in claims:
            ratio = rows.loc[winner, f"out tok/s @ c{c}"] / rows.loc[loser, f"out tok/s @ c{c}"]
            assert round((ratio - 1) * 100) == int(pct), (line, winner, loser, c)
            at = rows[f"out tok/s @ c{c}"]
            assert at.idxmax() == winner and sorted(at, reverse=True)[1] == rows.loc[loser, f"out tok/s @ c{c}"]
        assert (tmp_path / "report" / f"layouts-{profile}.png") in files
    # The replicas' results say what routed their requests.
    docs = [json.loads(p.read_text()) for p in results.rglob("*.json")]
    routed = [d["provenance"] for d in docs if d.get("provenance", {}).get("layout") == "replicas"]
    assert routed and all(p["router"]["engine"] == "vllm-router" and p["router"]["policy"] == "power_of_two"
                          and len(p["router"]["replicas"]) == 2 for p in routed), routed
    assert all(d["provenance"]["router"] is None for d in docs
               if d.get("provenance", {}).get("layout") in ("tp", "dp"))

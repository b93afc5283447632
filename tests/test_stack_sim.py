"""A stack on the simulated two-host cluster (real sshd per host, vLLM's CPU build, LiteLLM's
proxy 1.108.7): two different models at once, `smoke` on the head and `smoke-long` (served as
"smoke-long") on the worker, behind one endpoint that routes by `model`. Each request reaches
its own model's server (each vLLM's own request counter); /v1/models lists both; an unknown
model gets the router's clear 400; no key, no answer; the models started one after the other;
status READY naming both; logs by model; a model killed is DEGRADED and `up --stack` again
brings the stack back; `down` leaves nothing.

One deployment serves the whole module (its tests run in order)."""
from __future__ import annotations

import io
import json

import pytest
import requests

from sparkops.apply.ready import headers
from sparkops.apply.vllm_metrics import per_engine
from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Silent
from sparkops.bench.bench import bench
from sparkops.bench.results.files import validate
from sparkops.config.stack import load_stack
from sparkops.deploy.down import down
from sparkops.deploy.logs import show
from sparkops.deploy.stack_up import up_stack
from sparkops.deploy.status import collect, render

pytestmark = [pytest.mark.cluster, pytest.mark.vllm, pytest.mark.slow]


def chat(url: str, key: str | None, model: str) -> requests.Response:
    return requests.post(f"{url}/v1/chat/completions", timeout=120, headers=headers(key), json={
        "model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4})


def vllm_count(host, url: str) -> float:
    res = host.run(["curl", "-s", "--max-time", "10", f"{url}/metrics"], capture_output=True, text=True)
    return sum(per_engine(res.stdout, "vllm:request_success_total").values())


def processes(host) -> list[str]:
    res = host.run(["ps", "-eww", "-o", "args="], capture_output=True, text=True)
    return [line for line in res.stdout.splitlines() if "vllm serve" in line or "sparkops-litellm" in line
            or "litellm" in line.split(" ")[0]]


def test_install_litellm_on_the_head_finds_it_installed(sim_vllm, litellm_venv):
    """`inv install-vllm --litellm`: the installer runs on the head (as the sim's owner), probes
    the virtualenv scripts/test made, and leaves it as it is."""
    from sparkops.base.progress import Progress
    from sparkops.runtimes.install import install_litellm
    out = io.StringIO()
    install_litellm(sim_vllm(), Progress(out))
    assert f"litellm 1.108.7: already installed in {litellm_venv}" in out.getvalue(), out.getvalue()


@pytest.fixture(scope="module")
def stack(sim_vllm, sim_cluster, litellm_venv):
    st = load_stack("smoke-pair", "sim", sets=sim_vllm.sets, environ={})
    result = up_stack(st, progress=Silent())
    yield st, result
    down(st.cfg, progress=Silent())


def test_each_model_answers_through_one_endpoint_from_its_own_server(stack, sim_cluster):
    st, result = stack
    key = st.cfg.secrets["api_key"]
    head, worker = sim_cluster.host("spark-a"), sim_cluster.host("spark-b")
    (head_serve,) = [p for p in processes(head) if "vllm serve" in p]
    (worker_serve,) = [p for p in processes(worker) if "vllm serve" in p]
    assert "--served-model-name smoke " in head_serve and "--host 127.0.0.1 --port 8100" in head_serve
    assert "--served-model-name smoke-long " in worker_serve and f"--host {worker.roce_ip} --port 8100" in worker_serve
    assert key not in " ".join(processes(head) + processes(worker))  # keys come from 0600 env files

    listed = requests.get(f"{result.url}/v1/models", headers=headers(key), timeout=30).json()
    assert sorted(m["id"] for m in listed["data"]) == ["smoke", "smoke-long"]
    head_url, worker_url = "http://127.0.0.1:8100", f"http://{worker.roce_ip}:8100"
    before = (vllm_count(head, head_url), vllm_count(worker, worker_url))
    for _ in range(3):
        r = chat(result.url, key, "smoke-long")
        assert r.status_code == 200 and r.json()["choices"], r.text
    middle = (vllm_count(head, head_url), vllm_count(worker, worker_url))
    assert middle == (before[0], before[1] + 3), (before, middle)  # smoke-long: the worker's server alone
    for _ in range(2):
        assert chat(result.url, key, "smoke").status_code == 200
    after = (vllm_count(head, head_url), vllm_count(worker, worker_url))
    assert after == (middle[0] + 2, middle[1]), (middle, after)


def test_unknown_model_and_missing_key_are_refused(stack):
    st, result = stack
    key = st.cfg.secrets["api_key"]
    unknown = chat(result.url, key, "gpt-4o")
    assert unknown.status_code == 400 and "gpt-4o" in unknown.text
    # LiteLLM 1.108.7 refuses without a usable explanation: 500 with no key, 400 "No connected db."
    # with a wrong one (it looks the key up in a key database that a stack does not set up).
    for bad in (None, "sparkops-wrong-key", "sk-wrong"):
        r = chat(result.url, bad, "smoke")
        assert r.status_code in (400, 401, 500) and "choices" not in r.text, (bad, r.status_code, r.text[:200])
        assert requests.get(f"{result.url}/v1/models", headers=headers(bad), timeout=30).status_code != 200
    # The admin routes want the key too (model/new would add a server that gets the prompts).
    add = requests.post(f"{result.url}/model/new", timeout=30, json={
        "model_name": "evil", "litellm_params": {"model": "hosted_vllm/x", "api_base": "http://10.0.0.66/v1"}})
    assert add.status_code != 200
    names = [m["id"] for m in requests.get(f"{result.url}/v1/models", headers=headers(key), timeout=30).json()["data"]]
    assert "evil" not in names


def test_status_logs_then_a_killed_model_is_degraded_and_up_brings_it_back(stack, sim_cluster):
    st, result = stack
    status = collect(st.cfg)
    text = render(status)
    assert status["deployment"]["stack"] == "smoke-pair" and "READY" in text, text
    assert [m["served_model_name"] for m in status["deployment"]["router"]["models"]] == ["smoke", "smoke-long"]
    out = io.StringIO()
    show(st.cfg, node=None, lines=400, follow=False, out=out)
    logs = out.getvalue()
    assert "[spark-a:router]" in logs and "[spark-a:smoke]" in logs and "[spark-b:smoke-long]" in logs
    # One after the other: the worker's model started once the head's answered /health, the router last.
    by_node = {n["node"]: n["services"] for n in status["nodes"]}
    head_up, worker_up = by_node["spark-a"]["smoke"]["uptime_s"], by_node["spark-b"]["smoke-long"]["uptime_s"]
    assert head_up > worker_up >= by_node["spark-a"]["router"]["uptime_s"], by_node

    worker = sim_cluster.host("spark-b")
    for pid in worker.run(["pgrep", "-f", "vllm serve"], capture_output=True, text=True).stdout.split():
        worker.run(["kill", "-9", pid])
    down_text = render(collect(st.cfg))
    assert "DEGRADED" in down_text, down_text
    assert "smoke-long is not running on spark-b" in down_text or "smoke-long on spark-b died" in down_text
    assert "'smoke-long': " in down_text  # the API line names the model that does not answer
    again = up_stack(st, progress=Silent())
    assert not again.already
    assert chat(result.url, st.cfg.secrets["api_key"], "smoke-long").status_code == 200
    assert "READY" in render(collect(st.cfg))
    assert up_stack(st, progress=Silent()).already  # whole: nothing to do


def test_bench_targets_one_model_of_the_stack(stack, sim_vllm, sim_cluster, tmp_path):
    st, _ = stack
    worker = sim_cluster.host("spark-b")
    worker_url = f"http://{worker.roce_ip}:8100"
    args = dict(url=None, cluster="sim", single=False, quick=False, num_prompts=6, concurrency=2, dataset=None,
                max_tokens=8, output=None, engine="sparkops", ignore_eos=True, sets=list(sim_vllm.sets),
                results=str(tmp_path / "results"), out=io.StringIO())
    with pytest.raises(SparkopsError) as which:  # two models: bench must be told which
        bench(profile=None, **args)
    assert "smoke, smoke-long" in which.value.render()
    before = vllm_count(worker, worker_url)
    doc, path = bench(profile="smoke-long", **args)
    validate(json.loads(path.read_text()))
    assert doc["metrics"]["completed"] == 6
    assert vllm_count(worker, worker_url) >= before + 6  # the worker's model served them (and a warm-up)
    prov = doc["provenance"]
    assert (prov["profile"], prov["served_model_name"], prov["nodes"]) == ("smoke-long", "smoke-long", ["spark-b"])
    assert prov["router"]["engine"] == "litellm" and prov["router"]["stack"] == "smoke-pair"
    assert prov["config_hash"] == st.members[1].cfg.config_hash()


def test_down_leaves_nothing(stack, sim_cluster):
    st, _ = stack
    assert down(st.cfg, progress=Silent()) == []
    for name in ("spark-a", "spark-b"):
        assert processes(sim_cluster.host(name)) == [], name
    assert collect(st.cfg)["deployment"] is None
    assert json.dumps(collect(st.cfg)).count("running") == json.dumps(collect(st.cfg)).count('"running": false')

"""Layout replicas on the simulated two-host cluster (real sshd per host, vLLM's CPU build, the
smoke model, vllm-router 0.1.17): an independent server on each host behind the router on the
head; both take requests (the router's own count per replica, and a process on each host); one
killed: requests keep succeeding through the other, `status` says DEGRADED naming it, `watch
--restart` starts that one alone again while the router keeps serving; `down` leaves nothing.

One deployment serves the whole module (its tests run in order): a start costs a minute of CI."""
from __future__ import annotations

import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from sparkops.apply.ready import headers
from sparkops.apply.vllm_metrics import router_served
from sparkops.base.progress import Silent
from sparkops.deploy.down import down
from sparkops.deploy.status import collect, render
from sparkops.deploy.up import up
from sparkops.deploy.watch import watch
from sparkops.plan import api_url

pytestmark = [pytest.mark.cluster, pytest.mark.vllm, pytest.mark.slow]

# The sim's head is reached over its LAN address (not loopback), so the router must listen on
# every interface there: accepted for the test network (checks/api.py refuses it by default).
REPLICAS = ("serving.tensor_parallel=1", "serving.data_parallel=2", 'distributed.backend="replicas"',
            "router.allow_unauthenticated_admin=true")


def processes(host) -> list[str]:
    res = host.run(["ps", "-eww", "-o", "args="], capture_output=True, text=True)
    return [line for line in res.stdout.splitlines() if "vllm serve" in line or "vllm::router" in line
            or "sparkops-router" in line]


def chat(url: str, key: str | None, i: int, model: str = "smoke") -> requests.Response:
    return requests.post(f"{url}/v1/chat/completions", timeout=120, headers=headers(key), json={
        "model": model, "messages": [{"role": "user", "content": f"{i} hello {i * 7919}"}], "max_tokens": 4})


def served(cfg) -> dict[str, float]:
    """The router's count per replica URL (asked directly: `status` would add its own probe)."""
    text = requests.get(api_url(cfg, cfg.cluster["ports"]["router_metrics"]) + "/metrics", timeout=10).text
    return router_served(text)


@pytest.fixture(scope="module")
def deployed(sim_vllm, sim_cluster):
    cfg = sim_vllm(sets=REPLICAS)
    result = up(cfg, progress=Silent())
    yield cfg, result
    down(cfg, progress=Silent())


def test_both_replicas_take_requests_through_the_router(deployed, sim_cluster):
    cfg, result = deployed
    key = cfg.secrets["api_key"]
    head, worker = sim_cluster.host("spark-a"), sim_cluster.host("spark-b")
    (head_serve,) = [p for p in processes(head) if "vllm serve" in p]
    (worker_serve,) = [p for p in processes(worker) if "vllm serve" in p]
    assert "--host 127.0.0.1 --port 8100" in head_serve and "--port 8100" in worker_serve
    assert "--data-parallel-size" not in head_serve + worker_serve and "--headless" not in worker_serve
    assert any("vllm::router" in p for p in processes(head)) and not any("router" in p for p in processes(worker))
    assert key not in " ".join(processes(head))  # the key came from the env file

    urls = [r["url"] for r in collect(cfg)["deployment"]["router"]["replicas"]]
    before = served(cfg)
    assert all(before.get(u) for u in urls), before  # `up` returned once each had served
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda i: chat(result.url, key, i).status_code, range(24)))
    assert codes == [200] * 24
    after = served(cfg)
    assert sum(after.values()) - sum(before.values()) == 24
    assert all(after[u] > before[u] for u in urls), (before, after)

    # The router demands the key, lists the model, refuses a model it does not serve.
    assert chat(result.url, None, 0).status_code == 401
    assert chat(result.url, "sk-wrong", 0).status_code == 401
    listed = requests.get(f"{result.url}/v1/models", headers=headers(key), timeout=10).json()
    assert [m["id"] for m in listed["data"]] == ["smoke"]
    unknown = chat(result.url, key, 0, model="no-such-model")
    assert unknown.status_code == 404, unknown.text
    # Why checks/api.py keeps this router off the LAN by default: its admin routes answer with
    # no key at all (reading only here; /add_worker is as open). A vllm-router that closes them
    # fails this line, and the refusal can go.
    admin = requests.get(f"{result.url}/list_workers", timeout=10)
    assert admin.status_code == 200 and sorted(admin.json()["urls"]) == sorted(urls), admin.text

    data = collect(cfg)
    assert data["health"]["verdict"] == "READY", data["health"]
    assert "backend replicas, nodes spark-a, spark-b, 2 replicas behind vLLM's router (power_of_two)" in render(data)


def test_a_dead_replica_is_degraded_served_around_and_started_again_alone(deployed, sim_cluster, sim_vllm,
                                                                          tmp_path):
    cfg, result = deployed
    key = cfg.secrets["api_key"]
    head, worker = sim_cluster.host("spark-a"), sim_cluster.host("spark-b")
    router_pid = [p for p in head.run(["pgrep", "-f", "vllm::router"], capture_output=True, text=True).stdout.split()]
    for pid in worker.run(["pgrep", "-f", "vllm serve"], capture_output=True, text=True).stdout.split():
        worker.run(["kill", "-9", pid])
    # Every request keeps succeeding: the router retries one that met the dead replica on the
    # other, and stops sending it any after two failed health checks.
    t0 = time.monotonic()
    codes = [chat(result.url, key, i).status_code for i in range(20)]
    assert codes == [200] * 20, codes

    data = collect(cfg)
    assert data["health"]["verdict"] == "DEGRADED"
    # (not running, or died leaving its engine process: either way named, with its host)
    assert [p for p in data["health"]["problems"] if p.startswith("vllm ") and "spark-b" in p], data["health"]

    buf = io.StringIO()
    watch(cfg, interval=2, restart=True, as_json=True, stall_s=60, probe_timeout=20,
          incidents=tmp_path / "incidents", load=lambda profile: sim_vllm(profile, sets=REPLICAS), out=buf, ticks=2)
    events = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert any(e["event"] == "restarted" for e in events), events
    samples = [e for e in events if e["event"] == "sample"]
    assert samples[0]["state"] == "failed" and samples[-1]["state"] == "ok", events
    # Only the dead one started again: the router is the same process, and kept serving.
    assert head.run(["pgrep", "-f", "vllm::router"], capture_output=True, text=True).stdout.split() == router_pid
    before = served(cfg)
    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(lambda i: chat(result.url, key, i).status_code, range(16))) == {200}
    after = served(cfg)
    assert all(after[u] > before.get(u, 0) for u in after), (before, after)
    assert collect(cfg)["health"]["verdict"] == "READY"
    assert time.monotonic() - t0 < 600


def test_down_leaves_nothing_router_included(deployed, sim_cluster):
    cfg, _ = deployed
    assert down(cfg, progress=Silent()) == []
    head, worker = sim_cluster.host("spark-a"), sim_cluster.host("spark-b")
    assert processes(head) == [] and processes(worker) == []
    data = collect(cfg)
    assert data["health"]["verdict"] == "NONE" and data["deployment"] is None, data["health"]

"""Layout replicas on a Spark pair (recorded facts): independent vLLM servers behind vLLM's
router. The golden plan, reviewed: what each node runs, where each listens, what crosses the
cable, where the key goes; the plan that starts one dead replica again; the refusals."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sparkops.apply.vllm_metrics import router_served
from sparkops.base.errors import SparkopsError
from sparkops.checks import api
from sparkops.config import load_config
from sparkops.facts.recorded import recorded_facts
from sparkops.plan import layout, plan_down, plan_heal, plan_up
from sparkops.plan.render import plan_json, plan_text
from sparkops.plan.steps import Run, WriteFile

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden" / "plan-gpt-oss-120b-replicas-spark-pair.json"
UPDATE_GOLDEN = os.environ.get("SPARKOPS_UPDATE_GOLDEN") == "1"
HEAD_IP, WORKER_IP = "169.254.127.30", "169.254.127.31"
RUN_DIR = "/home/ubuntu/.local/share/sparkops/run"
REPLICAS = ("serving.tensor_parallel=1", "serving.data_parallel=2", 'distributed.backend="replicas"')
KEY = "sk-test-5e0c2a91"


def configure(*sets: str, profile: str = "gpt-oss-120b"):
    return load_config(profile, "spark-pair", root=ROOT, sets=[*REPLICAS, f"secrets.api_key={KEY}", *sets],
                       environ={})


def planned(*sets: str, profile: str = "gpt-oss-120b"):
    cfg = configure(*sets, profile=profile)
    facts = recorded_facts(cfg)[0]
    return cfg, facts, plan_up(cfg, facts)


def after(argv, flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_replicas_plan_matches_the_reviewed_golden_file():
    cfg, _, plan = planned()
    text = plan_json(plan, cfg.secret_values()) + "\n"
    if UPDATE_GOLDEN:
        GOLDEN.write_text(text)
    assert GOLDEN.read_text() == text, ("the plan changed; if that is intended, run SPARKOPS_UPDATE_GOLDEN=1 pytest "
                                        "tests/test_plan_replicas.py and review the diff")


def test_replicas_golden_file_says_what_independent_servers_need():
    """The review, written down: one plain `vllm serve` per Spark (no data-parallel or multi-node
    flag: nothing but requests crosses the cable), the head's bound to loopback and the worker's
    to its cable address, each on the replicas port with the API key from its env file; the
    router after them, on the API port, told every replica's URL; ready when each replica has
    served through the router."""
    plan = json.loads(GOLDEN.read_text())
    steps = {s["name"]: s for s in plan["steps"]}
    assert list(steps) == ["prepare", "start-replicas", "start-router", "ready", "record"]
    replicas = steps["start-replicas"]
    for node, host in (("spark-1", "127.0.0.1"), ("spark-2", WORKER_IP)):
        argv = replicas["actions"][node][0]["argv"]
        serve = argv[argv.index("serve") - 1:]
        assert after(serve, "--host") == host and after(serve, "--port") == "8100"
        assert after(serve, "--tensor-parallel-size") == "1"
        for flag in ("--data-parallel-size", "--headless", "--nnodes", "--distributed-executor-backend", "--api-key"):
            assert flag not in serve
        env = replicas["env"][node]
        assert env["VLLM_API_KEY"] != KEY and env["VLLM_API_KEY"]  # masked in the file, but there
        # An engine inside one node: none of the collective's variables, NCCL kept off the HCAs.
        assert "VLLM_HOST_IP" not in env and "NCCL_IB_HCA" not in env and env["NCCL_IB_DISABLE"] == "1"
    router = steps["start-router"]
    assert list(router["actions"]) == ["spark-1"]
    argv = router["actions"]["spark-1"][0]["argv"]
    assert after(argv, "--entrypoint") == "python3" and after(argv, "sparkops/vllm:spark") == "-c"
    assert after(argv, "--port") == "8000" and after(argv, "--host") == "0.0.0.0"
    assert after(argv, "--policy") == "power_of_two" and after(argv, "--metrics-port") == "8099"
    assert argv[-2:] == ["http://127.0.0.1:8100", f"http://{WORKER_IP}:8100"]
    ready = steps["ready"]["controller"][0]
    assert ready["replicas"] == [[0, "spark-1"], [1, "spark-2"]]
    assert ready["replica_urls"] == ["http://127.0.0.1:8100", f"http://{WORKER_IP}:8100"]
    assert ready["router_metrics"] == "http://127.0.0.1:8099/metrics"
    assert [(w["node"], w["service"]) for w in ready["watch"]] == [
        ("spark-1", "router"), ("spark-1", "vllm"), ("spark-2", "vllm")]  # the router, first, is the head's
    state = json.loads(steps["record"]["actions"]["spark-1"][0]["content"])
    assert state["backend"] == "replicas" and state["node_services"] == {"spark-1": ["vllm", "router"],
                                                                        "spark-2": ["vllm"]}
    assert state["router"]["policy"] == "power_of_two" and len(state["router"]["replicas"]) == 2
    stops = [a["argv"] for a in plan["undo"][0]["actions"]["spark-1"]]
    assert ["docker", "rm", "-f", "sparkops-router"] in stops


def test_the_key_is_in_each_env_file_and_on_no_command_line():
    cfg, _, plan = planned()
    prepare = next(s for s in plan.steps if s.name == "prepare")
    files = {(node, a.path): a for node, acts in prepare.actions.items() for a in acts if isinstance(a, WriteFile)}
    for node, service in (("spark-1", "vllm"), ("spark-2", "vllm"), ("spark-1", "router")):
        write = files[(node, f"{RUN_DIR}/{service}.env")]
        assert (write.mode, write.secret) == (0o600, True) and f"VLLM_API_KEY={KEY}" in write.content
    for s in plan.steps + plan.undo:
        for acts in s.actions.values():
            assert not any(KEY in " ".join(a.argv) for a in acts if isinstance(a, Run))
    assert KEY not in plan_text(plan, cfg.secret_values()) and KEY not in plan_json(plan, cfg.secret_values())
    # The router's script shows as its size in the text plan, whole in the JSON one.
    assert "'<script, " in plan_text(plan, cfg.secret_values())


def test_a_dead_replica_is_started_again_alone():
    cfg, facts, _ = planned()
    heal = plan_heal(cfg, facts, [("spark-2", "vllm")])
    assert [s.name for s in heal.steps] == ["stop-dead", "prepare", "start-replicas", "ready"]
    assert list(heal.steps[0].actions) == ["spark-2"] and list(heal.steps[1].actions) == ["spark-2"]
    assert list(heal.steps[2].actions) == ["spark-2"]  # not the head's replica, not the router
    (ready,) = heal.steps[3].controller
    assert ready.replicas == ((1, "spark-2"),) and ready.replica_urls == (f"http://{WORKER_IP}:8100",)
    assert {(w.node, w.service) for w in ready.watch} == {("spark-1", "router"), ("spark-2", "vllm")}
    # What it undoes on failure is what it started, and only that.
    (undo,) = heal.undo
    assert {n: [a.argv[-1] for a in acts] for n, acts in undo.actions.items()} == {"spark-2": ["sparkops-vllm"]}


def test_down_stops_the_router_too_and_layout_is_replicas():
    cfg, facts, _ = planned()
    assert layout(cfg) == "replicas"
    stops = [a.argv for a in plan_down(cfg, facts).steps[0].actions["spark-1"]]
    assert ("docker", "rm", "-f", "sparkops-router") in stops


def test_replicas_side_by_side_on_a_node_of_several_gpus_get_their_own_gpus_and_ports():
    cfg, facts, plan = planned("cluster.gpus_per_node=2", "serving.data_parallel=4", profile="qwen2.5-7b-instruct")
    names = [s.name for s in plan.steps]
    assert names[:4] == ["prepare", "start-replicas", "start-replicas-1", "start-router"]
    second = next(s for s in plan.steps if s.name == "start-replicas-1")
    assert second.service == "vllm-1" and set(second.actions) == {"spark-1", "spark-2"}
    assert second.env["spark-2"]["CUDA_VISIBLE_DEVICES"] == "1"
    argv = list(second.actions["spark-2"][0].argv)
    assert after(argv, "--port") == "8101" and after(argv, "--host") == WORKER_IP
    router = next(s for s in plan.steps if s.name == "start-router").actions["spark-1"][0].argv
    assert list(router[-4:]) == ["http://127.0.0.1:8100", "http://127.0.0.1:8101",
                                 f"http://{WORKER_IP}:8100", f"http://{WORKER_IP}:8101"]
    assert ("docker", "rm", "-f", "sparkops-vllm-1") in [a.argv for a in plan.undo[0].actions["spark-2"]]


def test_the_router_on_the_lan_is_refused_unless_accepted():
    def statuses(*sets):
        return [(c.name, c.status) for c in api.checks(configure(*sets))]
    assert ("api.router", "fail") in statuses()
    found = [c for c in api.checks(configure()) if c.name == "api.router"][0]
    assert "/add_worker" in found.message and "cluster.api.listen" in found.fix
    assert ("api.router", "warn") in statuses("router.allow_unauthenticated_admin=true")
    assert not [n for n, _ in statuses('cluster.api.listen="loopback"') if n == "api.router"]


@pytest.mark.parametrize("sets,words", [
    (("serving.tensor_parallel=2", "serving.data_parallel=1"), "more than a node's 1"),
    (("serving.data_parallel=1",), "puts a router in front of two replicas or more"),
])
def test_impossible_replicas_are_refused(sets, words):
    with pytest.raises(SparkopsError) as e:
        configure(*sets)
    assert words in e.value.render()


def test_router_counts_are_read_per_replica():
    """vllm-router 0.1.17's Prometheus text, recorded here: round robin over two fake vLLM
    servers, 80 streamed chats (tests/data/vllm-router-0.1.17-metrics.txt)."""
    text = (Path(__file__).parent / "data" / "vllm-router-0.1.17-metrics.txt").read_text()
    served = router_served(text)
    assert served == {"http://127.0.0.1:9101": 40.0, "http://127.0.0.1:9102": 40.0}

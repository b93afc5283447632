"""The planner: configuration + node facts -> per-node argv and environment (pure).

The plan of gpt-oss-120b on spark-pair from the recorded facts is compared with a reviewed
golden file; `SPARKOPS_UPDATE_GOLDEN=1 pytest tests/test_plan.py` rewrites it (review the
diff before committing it). The other tests check backends, runtimes and edge cases by what
the plan must contain, with the values of profiles/clusters/spark-pair.facts.json:
spark-1 169.254.127.30, spark-2 169.254.127.31 on enp1s0f1np1, HCAs roceP2p1s0f1 + rocep1s0f1.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
from pathlib import Path

import pytest

from sparkops.base.errors import SparkopsError
from sparkops.config import MASK, load_config
from sparkops.facts.node import load_recorded
from sparkops.facts.recorded import recorded_facts
from sparkops.plan import plan_down, plan_up
from sparkops.plan.render import plan_json, plan_text
from sparkops.plan.steps import Poll, Run, WriteFile

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden" / "plan-gpt-oss-120b-spark-pair.json"
FACTS_FILE = ROOT / "profiles" / "clusters" / "spark-pair.facts.json"
HEAD_IP, WORKER_IP = "169.254.127.30", "169.254.127.31"
ROCE_IF, HCAS = "enp1s0f1np1", "roceP2p1s0f1,rocep1s0f1"
RUN_DIR = "/home/ubuntu/.local/share/sparkops/run"
# Read at collection: the isolation fixture below clears SPARKOPS_* variables for each test.
UPDATE_GOLDEN = os.environ.get("SPARKOPS_UPDATE_GOLDEN") == "1"


@pytest.fixture(autouse=True)
def _isolated(isolated_override):
    """No developer override, no SPARKOPS_* variables; recorded facts come from this checkout."""


def configure(*sets: str, profile: str = "gpt-oss-120b", environ: dict | None = None):
    return load_config(profile, "spark-pair", root=ROOT, sets=list(sets), environ=environ or {})


def plan_for(*sets: str, profile: str = "gpt-oss-120b", facts: dict | None = None):
    cfg = configure(*sets, profile=profile)
    return cfg, plan_up(cfg, facts if facts is not None else recorded_facts(cfg)[0])


def step(plan, name: str):
    return next(s for s in plan.steps if s.name == name)


def runs(plan_or_steps) -> list[Run]:
    steps = plan_or_steps.steps + plan_or_steps.undo if hasattr(plan_or_steps, "steps") else plan_or_steps
    return [a for s in steps for actions in s.actions.values() for a in actions if isinstance(a, Run)]


def start_argv(plan, step_name: str, node: str) -> list[str]:
    (run,) = step(plan, step_name).actions[node]
    return list(run.argv)


def after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def env_file(plan, node: str, service: str = "vllm") -> WriteFile:
    return next(a for a in step(plan, "prepare").actions[node]
                if isinstance(a, WriteFile) and a.path == f"{RUN_DIR}/{service}.env")


def env_from_file(write: WriteFile) -> dict[str, str]:
    return dict(line.split("=", 1) for line in write.content.splitlines())


# --- the golden plan ---------------------------------------------------------------------------

def golden_text() -> str:
    cfg, plan = plan_for()
    return plan_json(plan, cfg.secret_values()) + "\n"


def test_plan_matches_the_reviewed_golden_file():
    text = golden_text()
    if UPDATE_GOLDEN:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert GOLDEN.read_text() == text, (
        "the plan changed; if that is intended, run SPARKOPS_UPDATE_GOLDEN=1 pytest "
        "tests/test_plan.py and review the diff of tests/golden/ against docs on Spark networking")


def test_golden_file_says_what_spark_facts_require():
    """The review of the golden file, written down: what spark-facts.md asks of a 2-Spark plan."""
    plan = json.loads(GOLDEN.read_text())
    steps = {s["name"]: s for s in plan["steps"]}
    assert [s["name"] for s in plan["steps"]] == ["prepare", "start-workers", "start-head", "ready", "record"]
    worker = steps["start-workers"]["actions"]["spark-2"][0]["argv"]
    head = steps["start-head"]["actions"]["spark-1"][0]["argv"]
    for node, argv, rank in (("spark-2", worker, "1"), ("spark-1", head, "0")):
        env = steps["start-workers" if node == "spark-2" else "start-head"]["env"][node]
        # NCCL over RoCE: both twin HCAs, sockets on the plain (non-P) interface, IB on, GDR off.
        assert env["NCCL_IB_HCA"] == HCAS
        for key in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME",
                    "UCX_NET_DEVICES", "OMPI_MCA_btl_tcp_if_include"):
            assert env[key] == ROCE_IF, key
        assert env["VLLM_HOST_IP"] == {"spark-1": HEAD_IP, "spark-2": WORKER_IP}[node]
        assert env["NCCL_IB_DISABLE"] == "0"
        assert env["NCCL_NET_GDR_LEVEL"] == "0"
        assert env["NCCL_IB_GID_INDEX"] == "3"
        assert env["NCCL_DEBUG"] == "INFO"  # so the logs show NET/IB vs a NET/Socket fallback
        assert env["HF_HUB_OFFLINE"] == "1"
        # The same environment is what the 0600 env file holds.
        write = next(a for a in steps["prepare"]["actions"][node] if a.get("path") == f"{RUN_DIR}/vllm.env")
        assert (write["mode"], write["secret"]) == (0o600, True)
        assert dict(l.split("=", 1) for l in write["content"].splitlines()) == env
        # Rendezvous of vLLM's own multi-node mode.
        assert after(argv, "--nnodes") == "2"
        assert after(argv, "--node-rank") == rank
        assert after(argv, "--master-addr") == HEAD_IP
        assert after(argv, "--master-port") == "29501"
        assert after(argv, "--distributed-executor-backend") == "mp"
        assert after(argv, "--tensor-parallel-size") == "2"
        assert ("--headless" in argv) is (node == "spark-2")
        # The container: GPUs, RDMA devices, locked memory, all variables from the file.
        assert argv[:2] == ["docker", "run"]
        assert after(argv, "--gpus") == "all"
        assert after(argv, "--device") == "/dev/infiniband"
        assert after(argv, "--network") == "host" and after(argv, "--ipc") == "host"
        assert "memlock=-1" in argv and "stack=67108864" in argv
        assert after(argv, "--env-file") == f"{RUN_DIR}/vllm.env"
        assert not any(a in ("-e", "--env") for a in argv)
        assert after(argv, "--gpu-memory-utilization") == "0.85"
        assert after(argv, "--max-model-len") == "32768"
    assert plan["undo"][0]["actions"]["spark-2"][0]["argv"] == ["docker", "rm", "-f", "sparkops-vllm"]
    ready = steps["ready"]["controller"][0]
    assert ready["url"] == "http://127.0.0.1:8000" and ready["model"] == "openai/gpt-oss-120b"
    assert [w["node"] for w in ready["watch"]] == ["spark-1", "spark-2"]  # head first


# --- the golden plan of the replica layout (data parallel) -------------------------------------

GOLDEN_DP = Path(__file__).parent / "golden" / "plan-qwen2.5-7b-instruct-dp2-spark-pair.json"
DP_SETS = ("serving.tensor_parallel=1", "serving.data_parallel=2")


def test_data_parallel_plan_matches_the_reviewed_golden_file():
    cfg, plan = plan_for(*DP_SETS, profile="qwen2.5-7b-instruct")
    text = plan_json(plan, cfg.secret_values()) + "\n"
    if UPDATE_GOLDEN:
        GOLDEN_DP.write_text(text)
    assert GOLDEN_DP.read_text() == text, "the plan changed; see test_plan_matches_the_reviewed_golden_file"


def test_data_parallel_golden_file_says_what_vllm_needs():
    """The review, written down: a replica per Spark, vLLM's data-parallel flags as its docs
    give them for a multi-node deployment, the head's API in front, the same network
    environment as the TP plan (a MoE model's replicas exchange expert traffic over it)."""
    plan = json.loads(GOLDEN_DP.read_text())
    steps = {s["name"]: s for s in plan["steps"]}
    assert [s["name"] for s in plan["steps"]] == ["prepare", "start-workers", "start-head", "ready", "record"]
    worker = steps["start-workers"]["actions"]["spark-2"][0]["argv"]
    head = steps["start-head"]["actions"]["spark-1"][0]["argv"]
    for node, argv in (("spark-1", head), ("spark-2", worker)):
        assert after(argv, "--tensor-parallel-size") == "1"
        assert after(argv, "--data-parallel-size") == "2"
        assert after(argv, "--data-parallel-size-local") == "1"
        assert after(argv, "--data-parallel-address") == HEAD_IP  # the head's RoCE address
        assert after(argv, "--data-parallel-rpc-port") == "29501"
        for flag in ("--nnodes", "--node-rank", "--master-addr", "--distributed-executor-backend"):
            assert flag not in argv  # not one model over the nodes
        env = steps["start-workers" if node == "spark-2" else "start-head"]["env"][node]
        assert env["VLLM_HOST_IP"] == {"spark-1": HEAD_IP, "spark-2": WORKER_IP}[node]
        assert env["NCCL_IB_HCA"] == HCAS and env["NCCL_SOCKET_IFNAME"] == ROCE_IF
        assert after(argv, "--gpus") == "all"
    assert after(worker, "--data-parallel-start-rank") == "1" and worker[-1] == "--headless"
    assert "--data-parallel-start-rank" not in head and "--headless" not in head
    assert head[head.index("serve") + 1] == worker[worker.index("serve") + 1] == "Qwen/Qwen2.5-7B-Instruct"
    ready = steps["ready"]["controller"][0]
    assert ready["replicas"] == [[0, "spark-1"], [1, "spark-2"]]
    assert [w["node"] for w in ready["watch"]] == ["spark-1", "spark-2"]
    record = steps["record"]["actions"]["spark-1"][0]
    assert json.loads(record["content"])["backend"] == "dp"
    assert json.loads(record["content"])["data_parallel"] == 2


def test_data_parallel_on_one_node_needs_no_address():
    _, plan = plan_for("serving.tensor_parallel=1", "serving.data_parallel=2", "cluster.gpus_per_node=2",
                       profile="qwen2.5-7b-instruct")
    assert [s.name for s in plan.steps] == ["prepare", "start-head", "ready", "record"]
    argv = start_argv(plan, "start-head", "spark-1")
    assert after(argv, "--data-parallel-size-local") == "2"
    assert "--data-parallel-address" not in argv and "--headless" not in argv
    (ready,) = step(plan, "ready").controller
    assert ready.replicas == ((0, "spark-1"), (1, "spark-1"))


def test_workers_start_before_the_head():
    _, plan = plan_for()
    order = [s.name for s in plan.steps]
    assert order.index("start-workers") < order.index("start-head") < order.index("ready")
    assert list(step(plan, "start-workers").actions) == ["spark-2"]
    assert list(step(plan, "start-head").actions) == ["spark-1"]


def test_plan_text_shows_the_roce_choice_and_environment():
    cfg, plan = plan_for()
    text = plan_text(plan, cfg.secret_values())
    assert f"spark-1: RoCE {ROCE_IF} {HEAD_IP}, HCAs {HCAS}, GID index 3" in text
    assert f"spark-2: RoCE {ROCE_IF} {WORKER_IP}, HCAs {HCAS}, GID index 3" in text
    assert f"NCCL_IB_HCA={HCAS}" in text
    assert "[secret file]" in text


# --- backends and runtimes ---------------------------------------------------------------------

def test_ray_backend_starts_ray_head_then_workers_waits_then_serves():
    _, plan = plan_for("distributed.backend=ray")
    assert [s.name for s in plan.steps] == [
        "prepare", "start-ray-head", "start-ray-workers", "wait-ray", "start-vllm", "ready", "record"]
    head_ray = start_argv(plan, "start-ray-head", "spark-1")
    assert head_ray[head_ray.index("--entrypoint") + 1:][:4] == ["ray", "sparkops/vllm:spark", "start", "--head"]
    assert after(head_ray, "--node-ip-address") == HEAD_IP
    assert after(head_ray, "--port") == "6379"
    worker_ray = start_argv(plan, "start-ray-workers", "spark-2")
    assert after(worker_ray, "--address") == f"{HEAD_IP}:6379"
    assert after(worker_ray, "--node-ip-address") == WORKER_IP
    (poll,) = step(plan, "wait-ray").actions["spark-1"]
    assert isinstance(poll, Poll)
    assert (poll.check, poll.expect) == ("ray-nodes", 2)
    assert list(poll.argv[-4:]) == ["ray", "status", "--address", f"{HEAD_IP}:6379"]
    serve = start_argv(plan, "start-vllm", "spark-1")
    assert after(serve, "--distributed-executor-backend") == "ray"
    assert "--nnodes" not in serve and "--headless" not in serve
    assert list(step(plan, "start-vllm").actions) == ["spark-1"]  # the driver runs on the head only
    vllm_env = step(plan, "start-vllm").env["spark-1"]
    assert vllm_env["RAY_ADDRESS"] == f"{HEAD_IP}:6379"
    assert env_from_file(env_file(plan, "spark-1", "vllm"))["RAY_ADDRESS"] == f"{HEAD_IP}:6379"
    for node, ip in (("spark-1", HEAD_IP), ("spark-2", WORKER_IP)):
        ray_env = env_from_file(env_file(plan, node, "ray"))
        assert ray_env["RAY_memory_monitor_refresh_ms"] == "0"
        assert ray_env["RAY_NODE_IP_ADDRESS"] == ray_env["RAY_OVERRIDE_NODE_IP_ADDRESS"] == ip
        assert ray_env["NCCL_IB_HCA"] == HCAS


def test_ray_temp_dir_is_per_node_and_short_enough_for_rays_sockets():
    from sparkops.plan.backend_ray import RAY_TEMP_DIR_MAX
    _, plan = plan_for("distributed.backend=ray", "cluster.runtime=native")
    assert after(start_argv(plan, "start-ray-head", "spark-1"), "--temp-dir") == \
        "/home/ubuntu/.local/share/sparkops/ray"
    # Ray refuses unix socket paths over 107 bytes: a long work_dir falls back to /tmp.
    _, plan = plan_for("distributed.backend=ray", "cluster.runtime=native",
                       'cluster.paths.work_dir="/srv/a-rather-long-directory-name/sparkops"')
    for step_name, node in (("start-ray-head", "spark-1"), ("start-ray-workers", "spark-2")):
        temp = after(start_argv(plan, step_name, node), "--temp-dir")
        assert temp.startswith("/tmp/sparkops-ray-") and len(temp) <= RAY_TEMP_DIR_MAX
    assert len("/session_2026-11-26_18-48-01_155446_4194304/sockets/plasma_store") + RAY_TEMP_DIR_MAX == 107


def test_native_runtime_starts_services_through_service_sh_from_the_venv():
    _, plan = plan_for("cluster.runtime=native")
    venv_bin = "/home/ubuntu/.local/share/sparkops/vllm-venv/bin"
    for step_name, node in (("start-workers", "spark-2"), ("start-head", "spark-1")):
        argv = start_argv(plan, step_name, node)
        assert argv[:8] == ["sh", f"{RUN_DIR}/service.sh", "start", "vllm", RUN_DIR,
                            "/home/ubuntu/.local/share/sparkops/logs/vllm.log", "--", f"{venv_bin}/vllm"]
        assert argv[8] == "serve"
        assert "docker" not in argv
    script = next(a for a in step(plan, "prepare").actions["spark-2"]
                  if isinstance(a, WriteFile) and a.path.endswith("service.sh"))
    assert script.mode == 0o755 and script.content.startswith("#!/bin/sh")
    env = env_from_file(env_file(plan, "spark-2"))
    assert env["PATH"].startswith(f"{venv_bin}:")
    assert env["HF_HOME"] == "/home/ubuntu/.cache/huggingface"
    assert env["NCCL_IB_HCA"] == HCAS
    stops = [r.argv for r in runs(plan_down(configure("cluster.runtime=native"),
                                            recorded_facts(configure())[0]).steps)]
    assert ("sh", f"{RUN_DIR}/service.sh", "stop", "ray", RUN_DIR, "20") in stops


def test_single_node_plan_has_no_rendezvous_and_keeps_nccl_off_ib():
    _, plan = plan_for("serving.tensor_parallel=1")
    assert [s.name for s in plan.steps] == ["prepare", "start-head", "ready", "record"]
    assert list(step(plan, "start-head").actions) == ["spark-1"]
    argv = start_argv(plan, "start-head", "spark-1")
    for flag in ("--nnodes", "--node-rank", "--master-addr", "--headless", "--distributed-executor-backend"):
        assert flag not in argv
    env = step(plan, "start-head").env["spark-1"]
    assert env["NCCL_IB_DISABLE"] == "1"
    assert env["GLOO_SOCKET_IFNAME"] == "lo"  # no hostname lookup (minutes where DNS is absent)
    assert not {"NCCL_IB_HCA", "NCCL_SOCKET_IFNAME", "VLLM_HOST_IP"} & env.keys()
    assert [n for n in plan.notes if "RoCE" in n] == []  # no RoCE note; only which vLLM runs
    assert plan.notes == ("spark-1: vLLM image sparkops/vllm:spark (not on this node yet)",)


def test_cpu_accelerator_has_no_gpus_and_no_nccl_variables():
    _, plan = plan_for("cluster.accelerator=cpu")
    for step_name, node in (("start-workers", "spark-2"), ("start-head", "spark-1")):
        argv = start_argv(plan, step_name, node)
        assert "--gpus" not in argv and "--device" not in argv and "--cap-add" not in argv
        assert "--gpu-memory-utilization" not in argv
        env = step(plan, step_name).env[node]
        assert not [k for k in env if k.startswith("NCCL_")]
        assert env["GLOO_SOCKET_IFNAME"] == ROCE_IF  # Gloo still needs the right interface
        assert env["VLLM_HOST_IP"] == {"spark-1": HEAD_IP, "spark-2": WORKER_IP}[node]


# --- quoting and secrets -------------------------------------------------------------------------

NASTY_NAME = "my model; $(touch /tmp/x) 'single' \"double\""
NASTY_REPO = "org/evil;$(touch${IFS}/tmp/x)'q\"dq"
NASTY_ARGS = ["--chat-template", "{{ 'a b' }}; $(touch /tmp/x) `id` \"q\"", "--seed=7 ; rm -rf ~"]


@pytest.mark.parametrize("runtime", ["docker", "native"])
def test_hostile_values_stay_single_argv_items(runtime):
    _, plan = plan_for(f"cluster.runtime={runtime}",
                       f"serving.served_model_name={json.dumps(NASTY_NAME)}",
                       f"model.repo={json.dumps(NASTY_REPO)}",
                       f"serving.extra_args={json.dumps(NASTY_ARGS)}")
    for step_name, node in (("start-workers", "spark-2"), ("start-head", "spark-1")):
        argv = start_argv(plan, step_name, node)
        assert argv.count(NASTY_NAME) == 1 and after(argv, "--served-model-name") == NASTY_NAME
        assert argv[argv.index("serve") + 1] == NASTY_REPO
        start = argv.index(NASTY_ARGS[0])
        assert argv[start:start + 3] == NASTY_ARGS
    every_run = runs(plan)
    assert len(every_run) >= 6
    for run in every_run:
        assert shlex.split(run.render()) == list(run.argv)


def test_an_api_key_reaches_the_env_file_and_nothing_printed():
    key = "sk-test-7c1d9e4b"
    cfg, plan = plan_for(f"secrets.api_key={key}")
    for node in ("spark-1", "spark-2"):
        write = env_file(plan, node)
        assert (write.mode, write.secret) == (0o600, True)
        assert env_from_file(write)["VLLM_API_KEY"] == key  # the service gets it...
    for run in runs(plan):
        assert key not in run.render()                       # ...but never on a command line
    text, data = plan_text(plan, cfg.secret_values()), plan_json(plan, cfg.secret_values())
    assert key not in text and key not in data
    assert f"VLLM_API_KEY={MASK}" in text
    parsed = json.loads(data)
    prepare = {s["name"]: s for s in parsed["steps"]}["prepare"]
    (written,) = [a for a in prepare["actions"]["spark-1"] if a.get("path") == f"{RUN_DIR}/vllm.env"]
    assert f"VLLM_API_KEY={MASK}" in written["content"].splitlines()
    assert cfg.config_hash() == configure("secrets.api_key=sk-another-key").config_hash()


def test_hf_token_is_not_handed_to_the_serving_nodes():
    cfg = configure(environ={"HF_TOKEN": "hf_download_only"})
    plan = plan_up(cfg, recorded_facts(cfg)[0])
    assert "hf_download_only" not in json.dumps(plan.as_dict())


# --- stopping, extra nodes, broken facts -----------------------------------------------------

def test_plan_down_stops_both_services_on_every_node():
    cfg = configure()
    down = plan_down(cfg, recorded_facts(cfg)[0])
    (stop,) = down.steps
    assert list(stop.actions) == ["spark-1", "spark-2"]
    for actions in stop.actions.values():
        argvs = [a.argv for a in actions]
        assert ("docker", "rm", "-f", "sparkops-vllm") in argvs
        assert ("docker", "rm", "-f", "sparkops-ray") in argvs
        assert all(1 in a.ok_exit for a in actions if a.argv[0] == "docker")  # already gone is fine
    assert ("rm", "-f", f"{RUN_DIR}/state.json") in [a.argv for a in stop.actions["spark-1"]]


THREE_NODES = ('cluster.nodes=[{name = "spark-1", host = "local"}, {name = "spark-2", host = "10.0.0.2"}, '
               '{name = "spark-3", host = "10.0.0.3"}]')


def test_a_third_node_is_left_out_of_a_two_rank_plan_but_stopped_by_down():
    cfg, plan = plan_for(THREE_NODES)
    touched = {node for s in plan.steps + plan.undo for node in s.actions}
    assert touched == {"spark-1", "spark-2"}
    assert after(start_argv(plan, "start-head", "spark-1"), "--nnodes") == "2"
    assert json.loads(step(plan, "record").actions["spark-1"][0].content)["nodes"] == ["spark-1", "spark-2"]
    down = plan_down(cfg, recorded_facts(cfg)[0])
    assert list(down.steps[0].actions) == ["spark-1", "spark-2", "spark-3"]


def recorded_with(node: str, **changes) -> dict:
    facts = load_recorded(FACTS_FILE)
    facts[node] = dataclasses.replace(facts[node], **changes)
    return facts


def test_roce_interface_without_ipv4_names_the_node_and_the_fix():
    facts = load_recorded(FACTS_FILE)
    interfaces = dict(facts["spark-2"].interfaces)
    interfaces[ROCE_IF] = dataclasses.replace(interfaces[ROCE_IF], ipv4=())
    with pytest.raises(SparkopsError) as caught:
        plan_for(facts=recorded_with("spark-2", interfaces=interfaces))
    err = caught.value
    assert err.host == "spark-2"
    text = err.render()
    assert "[spark-2]" in text and "no RoCE interface is up with an IPv4 address" in text
    assert f"RoCE link: rocep1s0f1 port 1 ==> {ROCE_IF} (Up)" in text
    assert f"interface {ROCE_IF}: UP, mtu 9000, no IPv4" in text
    assert "sudo ip addr add" in text and "roce_ip" in text


def test_explicit_roce_interface_without_ipv4_asks_for_roce_ip():
    facts = load_recorded(FACTS_FILE)
    with pytest.raises(SparkopsError) as caught:
        plan_for("cluster.network.interface=enP2p1s0f1np1", facts=facts)  # the twin has no address
    assert caught.value.host == "spark-1"
    assert "RoCE interface enP2p1s0f1np1 has no IPv4 address" in caught.value.render()
    assert "set roce_ip" in caught.value.render()


def test_gid_index_differing_between_hcas_is_left_to_nccl():
    facts = recorded_with("spark-1", gid_index={"rocep1s0f1": 3, "roceP2p1s0f1": 4})
    _, plan = plan_for(facts=facts)
    assert "NCCL_IB_GID_INDEX" not in step(plan, "start-head").env["spark-1"]
    assert step(plan, "start-workers").env["spark-2"]["NCCL_IB_GID_INDEX"] == "3"
    assert "spark-1: RoCE enp1s0f1np1 169.254.127.30, HCAs roceP2p1s0f1,rocep1s0f1, GID index None" in plan.notes
    # A configured index wins over the facts.
    _, pinned = plan_for("cluster.network.gid_index=3", facts=facts)
    assert step(pinned, "start-head").env["spark-1"]["NCCL_IB_GID_INDEX"] == "3"


def test_a_node_env_reaches_only_that_node_over_the_global_env(isolated_override):
    isolated_override.write_text(
        '[clusters.spark-pair]\n'
        'nodes = [{name = "spark-1", host = "local"},\n'
        '         {name = "spark-2", host = "spark-2.local", env = {NCCL_DEBUG = "TRACE", SPARK_SIDE = 2}}]\n')
    _, plan = plan_for("env.NCCL_DEBUG=\"WARN\"")
    head, worker = env_from_file(env_file(plan, "spark-1")), env_from_file(env_file(plan, "spark-2"))
    assert head["NCCL_DEBUG"] == "WARN" and "SPARK_SIDE" not in head
    assert worker["NCCL_DEBUG"] == "TRACE" and worker["SPARK_SIDE"] == "2"


def test_the_all_reduce_rank_gets_the_environment_vllm_gets(isolated_override):
    """One function builds both: the rank's environment is vLLM's on that node, less the API
    key, with NCCL's INFO lines on (and unbuffered output), node entries included."""
    from sparkops.checks.nccl import rank_env
    from sparkops.facts.roce import select_roce
    from sparkops.plan.context import contexts
    isolated_override.write_text(
        '[secrets]\napi_key = "sk-test-key"\n'
        '[clusters.spark-pair]\n'
        'nodes = [{name = "spark-1", host = "local"},\n'
        '         {name = "spark-2", host = "spark-2.local", env = {NCCL_DEBUG = "TRACE", SPARK_SIDE = 2}}]\n')
    cfg, plan = plan_for()
    facts = recorded_facts(cfg)[0]
    for ctx in contexts(cfg, facts):
        served = env_from_file(env_file(plan, ctx.name))
        choice = select_roce(ctx.facts, ctx.node, cfg.cluster["network"])
        rank = rank_env(cfg, ctx, choice, multi_node=True, backend="nccl")
        assert served.pop("VLLM_API_KEY") == "sk-test-key" and "VLLM_API_KEY" not in rank
        assert rank == served | {"NCCL_DEBUG": "INFO", "PYTHONUNBUFFERED": "1"}
    assert rank["SPARK_SIDE"] == "2" and rank["NCCL_IB_HCA"] == HCAS  # spark-2, last


# --- who the containers run as, who can reach the API, where copies go -------------------------

def test_containers_run_as_the_node_user_with_their_caches_outside_root():
    """A container that runs as root writes root-owned files into the user's mounted caches
    (sync, the hash cache and `hf cache delete` then fail): every sparkops container runs as
    the node's user (uid:gid from its facts), with home and caches at /sparkops/..., since an
    image's /root is closed to other users."""
    cfg, plan = plan_for()
    argv = start_argv(plan, "start-head", "spark-1")
    assert after(argv, "--user") == "1000:1000"
    mounts = [after(argv[i:], "-v") for i, a in enumerate(argv) if a == "-v"]
    assert "/home/ubuntu/.cache/sparkops/container-home:/sparkops/home" in mounts
    assert not any(":/root" in m for m in mounts)
    env = env_from_file(env_file(plan, "spark-1"))
    assert (env["HOME"], env["HF_HOME"], env["USER"]) == ("/sparkops/home", "/sparkops/huggingface", "ubuntu")
    prepared = step(plan, "prepare").actions["spark-1"][0].argv
    assert all(m.split(":")[0] in prepared for m in mounts)  # made by the user, never by Docker as root
    _, as_root = plan_for('cluster.docker.run_as="root"')
    assert "--user" not in start_argv(as_root, "start-head", "spark-1")


def test_the_smoke_model_is_built_as_the_node_user_too():
    from sparkops.models.smoke import plan_smoke_model
    cfg = configure()
    plan = plan_smoke_model(cfg, recorded_facts(cfg)[0])
    build = next(a for a in plan.steps[0].actions["spark-2"] if isinstance(a, Run) and "run" in a.argv)
    assert after(list(build.argv), "--user") == "1000:1000"
    assert "HOME=/sparkops/home" in build.argv


def test_the_api_listens_everywhere_with_a_key_or_on_loopback():
    _, everywhere = plan_for()  # the default: every interface (up refuses it without a key: test_checks)
    assert after(start_argv(everywhere, "start-head", "spark-1"), "--host") == "0.0.0.0"
    _, loopback = plan_for('cluster.api.listen="loopback"')
    assert after(start_argv(loopback, "start-head", "spark-1"), "--host") == "127.0.0.1"


def test_plan_names_where_copies_go_and_refuses_the_lan():
    from sparkops.plan.render import copy_route_lines
    cfg = configure()
    facts = load_recorded(FACTS_FILE)
    assert copy_route_lines(cfg, facts) == ["copies to the workers (inv sync, inv build):",
                                            f"  spark-1 -> spark-2: {WORKER_IP}, RoCE {ROCE_IF}"]
    no_cable = recorded_with("spark-2", roce=())
    lines = copy_route_lines(cfg, no_cable)
    assert "spark-1 -> spark-2: refused: no cable address for copies: no RoCE interface is up" in lines[1]
    assert "--over-lan" in lines[1]
    allowed = copy_route_lines(configure("cluster.sync.over_lan=true"), no_cable)
    assert allowed[1] == ("  spark-1 -> spark-2: spark-2.local, SSH address (no RoCE interface is up with an "
                          "IPv4 address) (over the LAN: cluster.sync.over_lan)")
    assert copy_route_lines(configure("serving.tensor_parallel=1"), facts) == []  # one node: no copies


def test_a_deployment_records_its_overrides_so_bench_reloads_it_as_deployed():
    """Found on the GPU: Mixtral served on one GPU with --set serving.tensor_parallel=1, then
    `inv bench` reloaded the profile alone (TP=2: two nodes) and refused it. The state records
    the deployment's --set and SPARKOPS_* values (never a secret), and a load with them is the
    deployed config, hash and all."""
    sets = ["serving.tensor_parallel=1", "serving.expert_parallel=false", 'secrets.api_key="k-not-recorded"']
    cfg = load_config("mixtral-8x7b-instruct-v0.1", "spark-pair", root=ROOT, sets=sets,
                      environ={"SPARKOPS_ENV__VLLM_USE_FLASHINFER_SAMPLER": "0"})
    plan = plan_up(cfg, recorded_facts(cfg)[0])
    state = json.loads(next(a.content for a in step(plan, "record").actions["spark-1"] if isinstance(a, WriteFile)))
    assert state["overrides"] == ['env.VLLM_USE_FLASHINFER_SAMPLER="0"', "serving.tensor_parallel=1",
                                  "serving.expert_parallel=false"]
    again = load_config("mixtral-8x7b-instruct-v0.1", "spark-pair", root=ROOT, sets=state["overrides"],
                        environ={"VLLM_API_KEY": "k-not-recorded"})
    assert again.config_hash() == state["hash"]
    # On the one-GPU cluster of that run: the profile alone cannot run there, as deployed it can.
    with pytest.raises(SparkopsError, match="needs 2 nodes"):
        load_config("mixtral-8x7b-instruct-v0.1", "gpu", root=ROOT, environ={})
    assert load_config("mixtral-8x7b-instruct-v0.1", "gpu", root=ROOT, environ={},
                       sets=[*state["overrides"], "cluster.node_memory_gib=139"]).serving["tensor_parallel"] == 1

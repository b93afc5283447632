"""Stacks (issue 23, several models at once): a stack file lists profiles with a placement
(node, memory share). What loading one makes of each model, and what it refuses: shares that
add up past a node, names that clash behind one endpoint, nodes that do not exist, a model
that does not fit its share, hostile or malformed files. Nothing here touches a machine."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sparkops.base.errors import ConfigError
from sparkops.config.stack import NODE_SHARE_MAX, load_stack, stack_names

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def root(tmp_path) -> Path:
    """A checkout's profiles and clusters, with room for stacks of the test's own."""
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    return tmp_path


def write(root: Path, name: str, text: str) -> None:
    (root / "profiles" / "stacks" / f"{name}.toml").write_text(text)


def model(profile: str, node: str, memory: float, extra: str = "") -> str:
    return f'\n[[models]]\nprofile = "{profile}"\nnode = "{node}"\nmemory = {memory}\n{extra}'


def refused(root: Path, name: str, *fragments: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_stack(name, root=root, environ={})
    text = info.value.render()
    for fragment in fragments:
        assert fragment in text, text
    assert "Traceback" not in text
    return info.value


def test_every_shipped_stack_loads():
    assert {"big-and-small", "two-small-on-one", "smoke-pair"} <= set(stack_names(ROOT))
    for name in stack_names(ROOT):
        load_stack(name, root=ROOT, environ={})


def test_each_model_is_one_server_inside_its_node_with_its_share_of_memory():
    stack = load_stack("big-and-small", root=ROOT, environ={})
    assert stack.cluster_name == "spark-pair"
    big, small = stack.members
    assert (big.name, big.node, big.memory, big.port) == ("gpt-oss-120b", "spark-1", 0.8, 8100)
    assert (small.name, small.node, small.memory, small.port) == ("qwen2.5-7b-instruct", "spark-2", 0.5, 8100)
    # gpt-oss-120b's profile spans two Sparks (TP=2); in a stack it is one server on spark-1.
    assert big.cfg.serving["tensor_parallel"] == 1 and big.cfg.serving["gpu_memory_utilization"] == 0.8
    assert big.cfg.doc["distributed"]["backend"] == "mp" and big.cfg.serving["data_parallel"] == 1
    assert (big.served_model_name, small.served_model_name) == ("openai/gpt-oss-120b", "Qwen/Qwen2.5-7B-Instruct")
    # Two models on one node: ports one after the other.
    pair = load_stack("two-small-on-one", root=ROOT, environ={})
    assert [(m.node, m.port, m.memory) for m in pair.members] == [("spark-1", 8100, 0.35), ("spark-1", 8101, 0.35)]


def test_the_stack_hash_is_its_models_and_their_placement(root):
    write(root, "a", model("smoke", "spark-1", 0.4) + model("smoke-long", "spark-2", 0.4, 'name = "long"\nset = '
                                                                                            "['serving.served_model_name=\"long\"']"))
    first = load_stack("a", root=root, environ={}).config_hash()
    assert load_stack("a", root=root, environ={}).config_hash() == first
    write(root, "a", model("smoke", "spark-1", 0.45) + model("smoke-long", "spark-2", 0.4, 'name = "long"\nset = '
                                                                                             "['serving.served_model_name=\"long\"']"))
    assert load_stack("a", root=root, environ={}).config_hash() != first


def test_shares_that_add_up_past_a_node_are_refused_naming_each(root):
    write(root, "full", model("qwen2.5-7b-instruct", "spark-1", 0.5)
          + model("mistral-7b-instruct-v0.3", "spark-1", 0.5))
    refused(root, "full", "node spark-1", "1.00", "qwen2.5-7b-instruct 0.5", "mistral-7b-instruct-v0.3 0.5",
            f"more than {NODE_SHARE_MAX:g}")


def test_a_model_that_does_not_fit_its_share_is_refused_naming_it(root):
    write(root, "small-share", model("gpt-oss-120b", "spark-1", 0.3) + model("smoke", "spark-2", 0.5))
    refused(root, "small-share", "models[0] (gpt-oss-120b)", "does not fit")


def test_unknown_node_names_the_cluster_s_nodes(root):
    write(root, "typo", model("smoke", "spark-l", 0.4) + model("smoke-long", "spark-2", 0.4))
    refused(root, "typo", "node 'spark-l' is not in cluster 'spark-pair'", "spark-1, spark-2", "did you mean")


def test_names_that_clash_behind_one_endpoint_are_refused(root):
    # smoke and smoke-long both serve as "smoke".
    write(root, "clash", model("smoke", "spark-1", 0.4) + model("smoke-long", "spark-2", 0.4))
    refused(root, "clash", "the same served model name 'smoke'", "serving.served_model_name")
    write(root, "twice", model("smoke", "spark-1", 0.4) + model("smoke", "spark-2", 0.4))
    refused(root, "twice", "the same name 'smoke'")
    write(root, "reserved", model("smoke", "spark-1", 0.4, 'name = "router"') + model("smoke-long", "spark-2", 0.4))
    refused(root, "reserved", "name 'router' is sparkops' own service")


def test_a_model_cannot_ask_for_more_gpus_than_its_node_has(root):
    write(root, "wide", model("smoke", "spark-1", 0.4, "set = ['serving.tensor_parallel=2']")
          + model("smoke-long", "spark-2", 0.4, "set = ['serving.served_model_name=\"long\"']"))
    refused(root, "wide", "asks for 2 GPUs", "which has 1")


def test_malformed_unknown_keys_and_hostile_names_are_refused(root):
    write(root, "broken", "[[models]\nprofile = ")
    refused(root, "broken", "broken.toml")
    write(root, "extra", model("smoke", "spark-1", 0.4, "gpus = 2") + model("smoke-long", "spark-2", 0.4))
    refused(root, "extra", "models[0]", "gpus")
    write(root, "one", model("smoke", "spark-1", 0.4))
    refused(root, "one", "models")  # one model is a profile, not a stack
    write(root, "evil", model("../../etc/passwd", "spark-1", 0.4) + model("smoke", "spark-2", 0.4))
    refused(root, "evil", "models[0].profile")
    write(root, "shell", model("smoke", "spark-1", 0.4, 'name = "x; rm -rf ~"') + model("smoke-long", "spark-2", 0.4))
    refused(root, "shell", "models[0].name")
    with pytest.raises(ConfigError) as info:
        load_stack("../profiles/smoke", root=root, environ={})
    assert "not allowed" in info.value.render()
    refused(root, "no-such-stack", "unknown stack 'no-such-stack'", "big-and-small")


def test_validate_stack_on_the_command_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKOPS_")}
    ok = subprocess.run([sys.executable, "-m", "invoke", "validate", "--stack", "big-and-small"], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok    stack big-and-small on spark-pair" in ok.stdout
    assert "gpt-oss-120b: 'openai/gpt-oss-120b' on spark-1 port 8100, memory share 0.8" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "invoke", "validate", "--stack", "big-and-smal"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "Traceback" not in bad.stdout + bad.stderr
    assert "did you mean 'big-and-small'" in bad.stdout + bad.stderr


GOLDEN = ROOT / "tests" / "golden" / "plan-stack-big-and-small-spark-pair.json"
KEY = "sk-test-5e0c2a91"


def planned_stack():
    from sparkops.facts.recorded import recorded_facts
    from sparkops.plan.stack import plan_stack
    stack = load_stack("big-and-small", root=ROOT, sets=[f"secrets.api_key={KEY}"], environ={})
    return stack, plan_stack(stack, recorded_facts(stack.cfg)[0])


def test_stack_plan_matches_the_reviewed_golden_file():
    from sparkops.plan.render import plan_json
    stack, plan = planned_stack()
    text = plan_json(plan, stack.cfg.secret_values()) + "\n"
    if os.environ.get("SPARKOPS_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert GOLDEN.read_text() == text, ("the plan changed; if that is intended, run SPARKOPS_UPDATE_GOLDEN=1 pytest "
                                        "tests/test_stack.py and review the diff")


def test_stack_golden_file_says_what_two_models_at_once_need():
    """The review, written down: the models start one after the other, each ready on its own node
    before the next; the head's on loopback, the worker's on its cable address, each on the first
    stack port with its share as --gpu-memory-utilization and the key from its 0600 env file; then
    LiteLLM on the API port, told each model's server with the key by name only; ready when each
    model completes through it; undo stops every model and the router on both nodes."""
    import json as js
    plan = js.loads(GOLDEN.read_text())
    names = [s["name"] for s in plan["steps"]]
    assert names == ["prepare", "start-gpt-oss-120b", "ready-gpt-oss-120b", "start-qwen2.5-7b-instruct",
                     "ready-qwen2.5-7b-instruct", "start-router", "ready", "record"]
    steps = {s["name"]: s for s in plan["steps"]}

    def argv(step: str, node: str) -> list[str]:
        (run,) = [a for a in steps[step]["actions"][node] if a["kind"] == "run"]
        return run["argv"]

    big, small = argv("start-gpt-oss-120b", "spark-1"), argv("start-qwen2.5-7b-instruct", "spark-2")
    for serve, host, share in ((big, "127.0.0.1", "0.8"), (small, "169.254.127.31", "0.5")):
        assert serve[serve.index("--host") + 1] == host and serve[serve.index("--port") + 1] == "8100"
        assert serve[serve.index("--gpu-memory-utilization") + 1] == share
        assert serve[serve.index("--tensor-parallel-size") + 1] == "1"
        assert "--data-parallel-size" not in serve and "--headless" not in serve
    assert list(steps["start-gpt-oss-120b"]["actions"]) == ["spark-1"]
    assert list(steps["start-qwen2.5-7b-instruct"]["actions"]) == ["spark-2"]
    (poll,) = steps["ready-qwen2.5-7b-instruct"]["actions"]["spark-2"]
    assert poll["kind"] == "poll" and poll["argv"][-1] == "http://169.254.127.31:8100/health"
    assert poll["watch"]["service"] == "qwen2.5-7b-instruct" and poll["timeout_s"] == 1800
    router = argv("start-router", "spark-1")
    config = js.loads(router[router.index("--config-json") + 1])
    assert [(m["model_name"], m["litellm_params"]["api_base"], m["litellm_params"]["api_key"])
            for m in config["model_list"]] == [
        ("openai/gpt-oss-120b", "http://127.0.0.1:8100/v1", "os.environ/VLLM_API_KEY"),
        ("Qwen/Qwen2.5-7B-Instruct", "http://169.254.127.31:8100/v1", "os.environ/VLLM_API_KEY")]
    assert config["general_settings"] == {"master_key": "os.environ/LITELLM_MASTER_KEY"}
    assert router[router.index("--port") + 1] == "8000" and "/opt/litellm/bin/python3" in router
    env = steps["start-router"]["env"]["spark-1"]
    assert env["LITELLM_MASTER_KEY"] == "********" and env["DISABLE_ADMIN_UI"] == "True"
    text = GOLDEN.read_text()
    assert KEY not in text  # masked everywhere: argv, env, files
    writes = [a for acts in steps["prepare"]["actions"].values() for a in acts if a["kind"] == "write"]
    for w in writes:
        if w["path"].endswith(".env"):
            assert w["mode"] == 0o600 and w["secret"], w["path"]
    (ready,) = steps["ready"]["controller"]
    assert (ready["model"], ready["models"], ready["health_path"]) == (
        "openai/gpt-oss-120b", ["Qwen/Qwen2.5-7B-Instruct"], "/health/liveliness")
    undo = {node: [a["argv"] for a in acts] for step in plan["undo"] for node, acts in step["actions"].items()}
    assert ["docker", "rm", "-f", "sparkops-gpt-oss-120b"] in undo["spark-1"]
    assert ["docker", "rm", "-f", "sparkops-router"] in undo["spark-1"]
    assert ["docker", "rm", "-f", "sparkops-qwen2.5-7b-instruct"] in undo["spark-2"]


def test_the_stack_state_names_every_model_and_service():
    import json as js
    _, plan = planned_stack()
    (write,) = plan.steps[-1].actions["spark-1"]
    state = js.loads(write.content)
    assert state["stack"] == "big-and-small" and state["backend"] == "stack"
    assert state["node_services"] == {"spark-1": ["gpt-oss-120b", "router"], "spark-2": ["qwen2.5-7b-instruct"]}
    assert [m["url"] for m in state["router"]["models"]] == ["http://127.0.0.1:8100", "http://169.254.127.31:8100"]
    # Recorded as starting before anything starts: an `up` killed half-way leaves the names of
    # what it may have started, for `down` and the next `up`.
    (early,) = [a for a in plan.steps[0].actions["spark-1"] if getattr(a, "path", "").endswith("state.json")]
    assert js.loads(early.content) == {**state, "starting": True}
    assert all(s.name == "prepare" or not any(getattr(a, "path", "").endswith("state.json") for a in acts)
               for s in plan.steps[:-1] for acts in s.actions.values())


def test_plan_stack_on_the_command_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKOPS_")}
    done = subprocess.run([sys.executable, "-m", "invoke", "plan", "--stack", "two-small-on-one", "--facts",
                           "recorded"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "start-llama-3.1-8b-instruct" in done.stdout and "start-qwen2.5-7b-instruct" in done.stdout
    assert "--port 8100" in done.stdout and "--port 8101" in done.stdout  # two on one node: two ports


def test_up_stack_refusals_on_the_command_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKOPS_")}

    def inv(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)
    both = inv("up", "--stack", "smoke-pair", "--profile", "smoke")
    assert both.returncode == 2 and "--profile and --sync go without it" in both.stderr
    unknown = inv("up", "--stack", "no-such-stack")
    assert unknown.returncode == 1 and "unknown stack 'no-such-stack'" in unknown.stderr
    assert "Traceback" not in unknown.stdout + unknown.stderr + both.stdout + both.stderr

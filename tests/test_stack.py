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

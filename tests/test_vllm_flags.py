"""The plan's vLLM flags against a vLLM's own `vllm serve --help=all` (checks/vllm_flags.py),
from recorded data: the help text of vLLM 0.32 (CPU build, recorded by this repository's
scripts/test install) and the golden plan's recorded Spark facts."""
from __future__ import annotations

from pathlib import Path

import pytest

from sparkops.checks.vllm_flags import known_flags, unknown, used_flags
from sparkops.config import load_config
from sparkops.facts.recorded import recorded_facts
from sparkops.plan import plan_up

ROOT = Path(__file__).resolve().parent.parent
HELP = (Path(__file__).parent / "data" / "vllm-serve-help-all-0.32.txt").read_text()


@pytest.fixture(autouse=True)
def _isolated(isolated_override):
    """No developer override."""


def plan(*sets: str):
    cfg = load_config("gpt-oss-120b", "spark-pair", root=ROOT, sets=list(sets), environ={})
    return plan_up(cfg, recorded_facts(cfg)[0])


def test_every_flag_of_the_shipped_plans_is_known_to_vllm_0_32():
    known = known_flags(HELP)
    assert {"--tensor-parallel-size", "--max-model-len", "--headless", "--enable-prefix-caching",
            "--no-enable-prefix-caching"} <= known
    used = used_flags(plan())
    assert set(used) == {"spark-1", "spark-2"} and "--tensor-parallel-size" in used["spark-1"]
    for node, flags in used.items():
        assert unknown(flags, known) == [], node
    # the replica layout too
    used = used_flags(plan("serving.tensor_parallel=1", "serving.data_parallel=2"))
    assert "--data-parallel-start-rank" in used["spark-2"] and "--data-parallel-address" in used["spark-1"]
    for node, flags in used.items():
        assert unknown(flags, known) == [], node


def test_an_unknown_flag_is_named_with_the_closest_one():
    used = used_flags(plan('serving.extra_args=["--max-num-seq", "64", "--zzqx"]'))
    assert unknown(used["spark-1"], known_flags(HELP)) == [("--max-num-seq", "--max-num-seqs"),
                                                          ("--zzqx", None)]


def head_context(profile: str, cluster: str, *sets: str):
    from sparkops.plan.context import contexts
    cfg = load_config(profile, cluster, root=ROOT, sets=list(sets), environ={})
    return contexts(cfg, recorded_facts(cfg)[0], all_nodes=True)[0]


def test_the_help_runs_in_a_container_that_sees_the_gpus_like_the_service():
    """A CUDA image's vLLM may not even print its help without a GPU: on an nvidia cluster the
    throwaway container gets the service's device flags (no env file, no ports)."""
    from sparkops.checks.vllm_flags import help_argv
    assert help_argv(head_context("gpt-oss-120b", "spark-pair")) == (
        "docker", "run", "--rm", "--label", "sparkops.managed=1",
        "--gpus", "all", "--device", "/dev/infiniband", "--cap-add", "IPC_LOCK",
        "--entrypoint", "vllm", "sparkops/vllm:spark", "serve", "--help=all")
    # one node: no RDMA devices; privileged clusters are privileged here too
    assert help_argv(head_context("qwen2.5-7b-instruct", "spark-pair", "serving.tensor_parallel=1",
                                         "cluster.docker.privileged=true")) == (
        "docker", "run", "--rm", "--label", "sparkops.managed=1", "--gpus", "all", "--privileged",
        "--entrypoint", "vllm", "sparkops/vllm:spark", "serve", "--help=all")


def test_the_help_container_of_a_cpu_cluster_asks_for_no_gpu():
    """`--gpus all` fails on a machine without GPUs (the sim cluster)."""
    from sparkops.checks.vllm_flags import help_argv
    assert help_argv(head_context("smoke", "sim", 'cluster.runtime="docker"')) == (
        "docker", "run", "--rm", "--label", "sparkops.managed=1",
        "-v", "/opt/sparkops/vllm-cpu:/opt/sparkops/vllm-cpu:ro",
        "-v", "/opt/sparkops/litellm:/opt/sparkops/litellm:ro", "-v", "/root/.pyenv:/root/.pyenv:ro",
        "-v", "/usr:/usr:ro",
        "--entrypoint", "vllm", "sparkops/vllm-cpu-test:latest", "serve", "--help=all")

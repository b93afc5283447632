"""The `gpu` cluster: this machine's NVIDIA GPU with memory of its own (an H200 in the GPU run),
the native runtime, no network. nvidia-smi is the one stand-in: it prints the H200 recording
(tests/data/facts/nvidia_smi_query/h200_gpu_run.txt, recorded on the project's GPU run; SOURCES.md)
for the probe's exact query. Everything else runs for real here."""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sparkops.base.errors import ConfigError
from sparkops.checks import profile, quick
from sparkops.config import load_config
from sparkops.facts.gather import facts_from_sections
from sparkops.facts.node import NodeFacts
from sparkops.facts.parsers import NVIDIA_SMI_QUERY_ARGV
from sparkops.facts.recorded import recorded_facts
from sparkops.plan import plan_up
from sparkops.plan.context import contexts

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "tests" / "data" / "facts"
H200 = RECORDED / "nvidia_smi_query" / "h200_gpu_run.txt"
H100X8 = RECORDED / "nvidia_smi_query" / "h100x8_composed.txt"
# The 32B at its preset's length: about 72 GiB of an 0.85 budget, more than an 80 GB GPU gives.
BIG = "qwen2.5-32b-instruct"
H200_LINE = "1 x NVIDIA H200, driver 580.159.04, compute capability 9.0, 140.4 GiB GPU memory (nvidia-smi memory.total)"


@pytest.fixture(autouse=True)
def _isolated(isolated_override):
    pass


def gpu_facts(recording: Path = H200, node: str = "gpu", meminfo_gib: int = 2048) -> NodeFacts:
    """A GPU machine's facts as the probe reports them: nvidia-smi's recording, the host's own
    (large) RAM, no interfaces known (no `ip` there, like the GPU run's machine)."""
    sections = {"hostname": (0, "h200-box"), "nvidia-smi": (0, recording.read_text()),
                "meminfo": (0, f"MemTotal: {meminfo_gib * 1024 ** 2} kB\nMemAvailable: {meminfo_gib * 1024 ** 2} kB"),
                "ip": (69, "no `ip` command (iproute2) and no python3 to read the interfaces with")}
    return facts_from_sections(node, sections)


def gpu_cfg(profile_name: str = "smoke", *sets: str, **kwargs):
    return load_config(profile_name, "gpu", environ={}, sets=list(sets), **kwargs)


def test_the_gpu_cluster_is_this_machine_with_a_discrete_gpu_and_no_network():
    cfg = gpu_cfg()
    c = cfg.cluster
    assert (c["accelerator"], c["unified_memory"], c["runtime"]) == ("nvidia", False, "native")
    assert c["venv"] == "~/.local/share/sparkops/vllm-cuda" and c["api"]["listen"] == "loopback"
    assert [n["host"] for n in cfg.nodes] == ["local"]
    plan = plan_up(cfg, {"gpu": gpu_facts()})  # interfaces unknown: one node needs none
    env = next(s.env["gpu"] for s in plan.steps if s.env)
    assert env["NCCL_IB_DISABLE"] == "1" and env["GLOO_SOCKET_IFNAME"] == "lo" and "VLLM_HOST_IP" not in env


def test_an_h200_is_reported_from_nvidia_smi_and_gets_no_gb10_driver_warning():
    cfg = gpu_cfg()
    (gpu,) = quick.gpu(cfg, contexts(cfg, {"gpu": gpu_facts()}))
    assert (gpu.status, gpu.message, gpu.fix) == ("ok", H200_LINE, "")
    assert gpu.evidence["gpus"][0]["memory_total_mib"] == 143771
    # The GB10 driver advice is for GB10 alone: another driver line on an H200 is not warned about.
    other = dataclasses.replace(gpu_facts(), gpus=(dataclasses.replace(gpu_facts().gpus[0], driver="590.48.01"),))
    assert quick.gpu(cfg, contexts(cfg, {"gpu": other}))[0].status == "ok"


def test_a_discrete_gpu_on_a_cluster_that_says_unified_memory_warns():
    """The default is unified memory (a Spark): an H200 there would be judged by the host's RAM
    and checked for the page cache; the gpu check says to set unified_memory = false."""
    cfg = gpu_cfg("smoke", "cluster.unified_memory=true")
    (gpu,) = quick.gpu(cfg, contexts(cfg, {"gpu": gpu_facts()}))
    assert gpu.status == "warn" and "cluster.unified_memory is true" in gpu.message
    assert gpu.fix.startswith("set cluster.unified_memory = false")


def test_the_memory_fit_on_a_discrete_gpu_uses_the_gpu_s_own_memory():
    """cluster.node_memory_gib (79 on `gpu`) judges without facts; with them, nvidia-smi's
    memory.total decides: the 32B fits an H200, not an 80 GB H100, whatever the host's RAM."""
    with pytest.raises(ConfigError, match="does not fit"):
        gpu_cfg(BIG)  # config time, no facts: the static figure
    cfg = gpu_cfg(BIG, facts_follow=True)  # a verb that asks the node next: only a warning
    (static,) = [f for f in cfg.findings if f.path == "serving" and "does not fit" in f.message]
    assert static.level == "warn" and "judged from cluster.node_memory_gib 79 GiB" in static.message

    (fit,) = profile.memory_fit(cfg, contexts(cfg, {"gpu": gpu_facts()}))
    assert fit.status == "ok" and "(node memory: nvidia-smi memory.total 140.4 GiB)" in fit.message
    assert fit.evidence["node_memory_gib"] == round(143771 / 1024, 2)
    (small,) = profile.memory_fit(cfg, contexts(cfg, {"gpu": gpu_facts(H100X8)}))
    assert small.status == "fail" and "nvidia-smi memory.total 79.6 GiB" in small.message
    # nvidia-smi silent: the static figure, said so
    (unknown,) = profile.memory_fit(cfg, contexts(cfg, {"gpu": dataclasses.replace(gpu_facts(), gpus=())}))
    assert unknown.status == "fail" and "cluster.node_memory_gib 79 GiB (nvidia-smi reported no GPU memory" \
        in unknown.message


def test_two_gpus_per_node_offer_twice_the_smallest():
    cfg = gpu_cfg(BIG, "cluster.gpus_per_node=8", "serving.tensor_parallel=2", facts_follow=True)
    (fit,) = profile.memory_fit(cfg, contexts(cfg, {"gpu": gpu_facts(H100X8)}))
    assert fit.status == "ok" and "nvidia-smi memory.total 79.6 GiB x 2 GPUs" in fit.message
    assert fit.evidence["node_memory_gib"] == round(2 * 81559 / 1024, 2)


def test_unified_memory_still_comes_from_meminfo():
    cfg = load_config("gpt-oss-120b", "spark-pair", environ={})
    facts, _ = recorded_facts(cfg)
    (fit,) = profile.memory_fit(cfg, contexts(cfg, facts))
    assert fit.evidence["memory_from"] == "/proc/meminfo MemTotal 121.7 GiB (unified memory)"


# --- the verbs, for real, with the H200 stand-in --------------------------------------------

def standin_path(tmp_path: Path, recording: Path | None) -> str:
    """This machine's commands without ip, ss and hostname (like the GPU machine), and an
    nvidia-smi that prints `recording` for the probe's query (none at all when None)."""
    from test_probe import shadow_path
    path = shadow_path(tmp_path, ("ip", "ss", "hostname", "nvidia-smi"), sys.executable)
    if recording:
        smi = Path(path) / "nvidia-smi"
        smi.write_text(f'#!/bin/sh\n[ "$*" = {shlex.quote(" ".join(NVIDIA_SMI_QUERY_ARGV[1:]))} ] || '
                       '{ echo "Invalid combination of input arguments."; exit 2; }\n'
                       f"cat {shlex.quote(str(recording))}\n")
        smi.chmod(0o755)
    return path


def inv(tmp_path: Path, path: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKOPS_") and k not in ("HF_TOKEN",)}
    env |= {"SPARKOPS_LOCAL": str(tmp_path / "sparkops.local.toml"), "PATH": path}
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_plan_and_check_on_the_gpu_cluster_read_the_h200(tmp_path):
    path = standin_path(tmp_path, H200)
    plan = inv(tmp_path, path, "plan", "--profile", BIG, "--cluster", "gpu")
    assert plan.returncode == 0, plan.stderr
    assert "judged from cluster.node_memory_gib 79 GiB" in plan.stderr
    assert f"memory fit: {BIG}: fits, " in plan.stdout
    assert "(node memory: nvidia-smi memory.total 140.4 GiB)" in plan.stdout
    assert "vllm-cuda" in plan.stdout and "layouts of" in plan.stdout and "does not fit" not in plan.stdout

    done = inv(tmp_path, path, "check", "--cluster", "gpu", "--profile", BIG, "--quick", "--json")
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert (checks["gpu"]["status"], checks["gpu"]["message"]) == ("ok", H200_LINE)
    assert checks["memory.fit"]["status"] == "ok" and checks["memory.fit"]["evidence"]["memory_from"] == \
        "nvidia-smi memory.total 140.4 GiB"
    assert "memory.free" not in checks  # the page-cache check is for unified memory
    assert checks["runtime"]["status"] == "fail" and "inv install-vllm --cluster gpu" in checks["runtime"]["fix"]

    gpu_only = inv(tmp_path, path, "check", "--cluster", "gpu", "--gpu", "--json")
    assert [c["name"] for c in json.loads(gpu_only.stdout)["checks"]] == ["ssh", "gpu", "runtime"]


def test_plan_without_gpu_memory_facts_judges_with_the_static_figure(tmp_path):
    done = inv(tmp_path, standin_path(tmp_path, None), "plan", "--profile", BIG, "--cluster", "gpu")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done
    assert "cannot run: the model does not fit" in done.stderr
    assert "(node memory: cluster.node_memory_gib 79 GiB (nvidia-smi reported no GPU memory on gpu))" in done.stderr


def test_results_record_the_gpus_own_memory_beside_the_hosts():
    """The GPU run's results said memory_gib 125.8 for an H200: the host's RAM. They now carry the
    GPU's own (143771 MiB in the recording) and keep the host's apart; a GB10 has none of its own."""
    from sparkops.bench.load.target import hardware_of
    h200 = hardware_of("gpu", gpu_facts(meminfo_gib=126), "nvidia")
    assert h200 == {"node": "gpu", "gpu": "NVIDIA H200", "driver": "580.159.04", "memory_gib": 126.0,
                    "gpu_memory_gib": 140.4}
    gb10 = hardware_of("spark", gpu_facts(RECORDED / "nvidia_smi_query" / "gb10_hutch_composed.txt"), "nvidia")
    assert gb10["gpu"] == "NVIDIA GB10" and gb10["gpu_memory_gib"] is None
    assert hardware_of("gone", None, "nvidia")["gpu"] is None

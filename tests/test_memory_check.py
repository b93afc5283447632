"""Unified memory before vLLM starts (checks/memory.py), from recorded /proc/meminfo: ok /
evict the model's pages / refuse, with the numbers in GiB and a fix naming flags that exist;
the same verdict in `inv check`'s quick group and in `up`'s preflight."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sparkops.checks import memory, quick
from sparkops.checks.preflight import preflight
from sparkops.config import load_config
from sparkops.facts.parsers import parse_meminfo
from sparkops.facts.recorded import recorded_facts
from sparkops.facts.types import DiskFree, MemInfo
from sparkops.plan.context import contexts

ROOT = Path(__file__).resolve().parent.parent
MEMINFO = ROOT / "tests" / "data" / "facts" / "meminfo"
GIB = 1024 ** 3
# A DGX Spark after a CUDA runner stopped: MemTotal 121.7 GiB, MemFree 3.0, Cached 35.9,
# MemAvailable 38.3 (the rest held outside the page cache).
SPARK_CACHED = parse_meminfo((MEMINFO / "spark_after_stop_partial.txt").read_text())
# An idle Spark quoted with two lines: MemTotal 121.7 GiB, MemAvailable 113.1, no MemFree.
SPARK_IDLE = parse_meminfo((MEMINFO / "spark_nvitop_pr208.txt").read_text())
# The x86 machine these tests were written on: 23.5 GiB, 18.0 free, 4.6 cached, 22.7 available.
X86 = parse_meminfo((MEMINFO / "x86_dev_sandbox_full.txt").read_text())


@pytest.fixture(autouse=True)
def _isolated(isolated_override):
    """No developer override, no SPARKOPS_* variables."""


def configure(*sets: str, profile: str = "gpt-oss-120b"):
    """As after `inv setup` (an API key: the API check has nothing to say)."""
    return load_config(profile, "spark-pair", root=ROOT, sets=list(sets), environ={"VLLM_API_KEY": "k" * 32})


@pytest.mark.parametrize("mem, gmu, action", [
    (SPARK_CACHED, 0.85, memory.REFUSE),  # 106.4 GiB wanted, 38.3 available
    (SPARK_CACHED, 0.25, memory.EVICT),  # 33.4 wanted: over the 3.0 free, under the 38.3 available
    (SPARK_IDLE, 0.85, memory.ACTION_OK),  # no MemFree quoted: MemAvailable's 113.1 covers 106.4
    (SPARK_IDLE, 0.95, memory.REFUSE),  # 118.6 wanted
    (X86, 0.50, memory.ACTION_OK),  # 14.8 wanted, 18.0 free
    (X86, 0.70, memory.EVICT),  # 19.5 wanted
    (X86, 0.90, memory.REFUSE),  # 24.2 wanted, 22.7 available
])
def test_decision_from_recorded_meminfo(mem, gmu, action):
    assert memory.decide(mem, gmu).action == action


def test_the_margin_covers_what_vllm_takes_before_it_compares():
    # 1 GiB more free than gpu_memory_utilization x MemTotal: vLLM's own processes and CUDA
    # context take that before its check, so this node is short, and dropping cache is the remedy.
    mem = dataclasses.replace(SPARK_CACHED, free_bytes=int(0.25 * SPARK_CACHED.total_bytes) + GIB)
    assert memory.decide(mem, 0.25, margin_bytes=0).action == memory.ACTION_OK
    assert memory.decide(mem, 0.25).action == memory.EVICT
    assert memory.MARGIN_BYTES == 3 * GIB


def test_a_spark_whose_memory_is_held_elsewhere_is_refused_with_the_numbers_and_a_value_that_fits():
    check = memory.check("spark-1", memory.decide(SPARK_CACHED, 0.85))
    assert check.status == "fail" and check.name == "memory.free"
    assert check.message == ("3.0 GiB free (MemFree), 35.9 GiB in the page cache, 38.3 GiB available "
                             "(MemAvailable): vLLM at gpu_memory_utilization 0.85 needs 103.4 GiB of 121.7 GiB "
                             "free when it starts (+3 GiB margin); other processes hold the rest")
    assert "stop what holds the memory on spark-1" in check.fix
    assert "`--set serving.gpu_memory_utilization=0.29` (on `inv up`)" in check.fix
    assert check.evidence["need_gib"] == pytest.approx(103.43, abs=0.01)
    # The value the fix names is a real key that validates, and it is no longer refused.
    cfg = configure("serving.gpu_memory_utilization=0.29", profile="gpt-oss-20b")
    assert memory.decide(SPARK_CACHED, cfg.serving["gpu_memory_utilization"]).action != memory.REFUSE


def test_a_spark_full_of_page_cache_warns_that_up_evicts_the_model_pages():
    check = memory.check("spark-2", memory.decide(SPARK_CACHED, 0.25))
    assert check.status == "warn"
    assert check.message.startswith("3.0 GiB free (MemFree), 35.9 GiB in the page cache, 38.3 GiB available")
    assert "needs 30.4 GiB of 121.7 GiB free when it starts" in check.message
    assert check.fix.startswith("`inv up` evicts the model's own pages from the page cache before it starts vLLM")
    assert memory.DROP_CACHES in check.fix


def test_after_eviction_the_fix_is_the_rest_of_the_cache_or_a_smaller_share():
    verdict = memory.decide(SPARK_CACHED, 0.25)
    fix = memory.still_short_fix(verdict, "spark-2")
    assert fix.startswith(f"drop the rest of the page cache on spark-2 (needs root): `{memory.DROP_CACHES}`")
    assert "gpu_memory_utilization" not in fix  # 3.0 GiB free leaves nothing once the margin is kept
    roomy = dataclasses.replace(SPARK_CACHED, free_bytes=20 * GIB)
    assert "`--set serving.gpu_memory_utilization=0.13`" in memory.still_short_fix(memory.decide(roomy, 0.25), "n")


def with_memory(cfg, mem: MemInfo):
    facts, _ = recorded_facts(cfg)
    return {n: dataclasses.replace(f, memory=mem, image_id="sha256:" + "a" * 64, clock=5.0,
                                   disk=DiskFree("/", 900 * GIB, 800 * GIB)) for n, f in facts.items()}


def test_inv_check_and_preflight_report_the_same_verdict():
    cfg = configure()
    facts = with_memory(cfg, SPARK_CACHED)
    ctxs = contexts(cfg, facts, all_nodes=True)
    assert {(c.node, c.status) for c in memory.checks(cfg, ctxs)} == {("spark-1", "fail"), ("spark-2", "fail")}
    assert [c for c in quick.checks(cfg, ctxs, {}) if c.name == "memory.free"] == memory.checks(cfg, ctxs)
    found = {(c.name, c.node, c.status) for c in preflight(cfg, facts, profile_flag="--profile gpt-oss-120b")}
    assert found == {("memory.free", "spark-1", "fail"), ("memory.free", "spark-2", "fail")}
    # Eviction would do: a warning, and `up` goes on (it evicts before starting anything).
    cfg = configure("serving.gpu_memory_utilization=0.25", profile="gpt-oss-20b")
    found = {(c.name, c.node, c.status) for c in preflight(cfg, with_memory(cfg, SPARK_CACHED),
                                                           profile_flag="--profile gpt-oss-20b")}
    assert found == {("memory.free", "spark-1", "warn"), ("memory.free", "spark-2", "warn")}


def test_only_unified_memory_nvidia_clusters_are_checked_and_not_while_serving():
    facts = with_memory(configure(), SPARK_CACHED)
    discrete = configure("cluster.unified_memory=false")
    assert not memory.applies(discrete)
    assert memory.checks(discrete, contexts(discrete, facts, all_nodes=True)) == []
    for cluster in ("local", "sim"):  # CPU clusters: vLLM gets no --gpu-memory-utilization
        assert not memory.applies(load_config("smoke", cluster, root=ROOT, environ={}))
    cfg = configure()
    serving = memory.checks(cfg, contexts(cfg, facts, all_nodes=True), {"profile": "gpt-oss-120b"})
    assert [(c.node, c.status) for c in serving] == [("spark-1", "ok"), ("spark-2", "ok")]
    assert serving[0].message == "not compared while gpt-oss-120b is serving: its vLLM holds the memory"

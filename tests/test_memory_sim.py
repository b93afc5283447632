"""Unified memory before vLLM starts, on the simulated cluster: `inv up` refuses in its
preflight, with the numbers, before it starts anything, when the nodes do not have what
gpu_memory_utilization asks for; and where the page cache is in the way, `up`'s make-room step
evicts the model's pages on the node over SSH and leaves other files' pages alone.

The simulated hosts are CPU hosts sharing this machine's kernel; `cluster.accelerator=nvidia`
and `cluster.unified_memory=true` make them Sparks to sparkops (nvidia-smi is the recorded
GB10 stand-in), and their /proc/meminfo is this machine's, read live."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from sparkops.apply.health import service_states
from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Progress
from sparkops.checks.runner import run_checks
from sparkops.config import load_config
from sparkops.deploy.up import up
from sparkops.facts.parsers import parse_meminfo
from sparkops.facts.session import cluster_session
from sparkops.plan import ALL_SERVICES
from sparkops.plan.context import contexts
from sparkops.sim.tasks import write_override

pytestmark = [pytest.mark.cluster]
SPARK = ['cluster.accelerator="nvidia"', "cluster.unified_memory=true"]
GIB = 1024 ** 3
MIB = 1 << 20
# (The new modules are imported inside the tests that use them: the refusal test runs, and
# fails on its assertions, against code that has none of them.)
BLOB = 512 * MIB


@pytest.fixture(scope="module")
def sim(sim_cluster, tmp_path_factory, monkeypatch_module):
    override = tmp_path_factory.mktemp("sim-memory") / "sparkops.local.toml"
    monkeypatch_module.setenv("SPARKOPS_LOCAL", str(override))
    write_override(sim_cluster, override)

    # Unified memory is the host's: what the config's memory-fit estimate assumes before facts
    # are read is this machine's MemTotal (sim.toml's 4 GiB would not fit a small share).
    node_memory = f"cluster.node_memory_gib={meminfo().total_bytes / GIB:.1f}"

    def make(*sets: str):
        return load_config("smoke", "sim", sets=[*SPARK, node_memory, *sets], environ={})
    return make


def meminfo():
    return parse_meminfo(Path("/proc/meminfo").read_text())


def test_up_refuses_in_preflight_with_the_numbers_and_starts_nothing(sim):
    # 0.99 of MemTotal plus the margin is more than any host has available: refused, not evicted.
    cfg = sim("serving.gpu_memory_utilization=0.99")
    said = io.StringIO()
    with pytest.raises(SparkopsError) as err:
        up(cfg, progress=Progress(stream=said))
    text = err.value.render()
    total = meminfo().total_bytes
    assert "step 'preflight'" in text and "nothing was started" in text
    for node in ("spark-a", "spark-b"):
        assert f"[{node}] memory.free: " in text
        assert f"fix: stop what holds the memory on {node}" in text
    assert (f"vLLM at gpu_memory_utilization 0.99 needs {0.99 * total / GIB:.1f} GiB of {total / GIB:.1f} GiB "
            "free when it starts (+3 GiB margin); other processes hold the rest") in text
    assert "GiB available (MemAvailable)" in text
    assert "evicting" not in said.getvalue()  # eviction cannot make that room: not tried
    with cluster_session(cfg) as session:
        states = service_states(session, ["spark-a", "spark-b"], list(ALL_SERVICES))
    assert not any(st["running"] for by in states.values() for st in by.values()), states

    # `inv check` reports the same verdict (quick group), without evicting anything.
    report = run_checks(cfg, ["quick"], profile="smoke", progress=Progress(quiet=True))
    found = {c.node: c for c in report.checks if c.name == "memory.free"}
    assert {n: c.status for n, c in found.items()} == {"spark-a": "fail", "spark-b": "fail"}
    assert found["spark-b"].evidence["need_gib"] == pytest.approx(0.99 * total / GIB, abs=0.01)


def _sh(conn, script: str, *args: str) -> str:
    res = conn.run(["sh", "-c", script, "sh", *args], timeout=120)
    assert res.ok, res.tail()
    return res.stdout


def _resident(conn, path: str) -> int:
    return int(_sh(conn, 'fincore --bytes --noheadings --raw --output RES "$1"', path).split()[0])


def test_make_room_evicts_the_model_pages_on_the_node_and_decides_again(sim):
    from sparkops.checks import memory
    from sparkops.deploy.make_room import make_room, model_folder
    # One node (tensor_parallel 1: spark-a only) and a model of our own, so no other test's
    # cache is touched. Its 512 MiB blob and a sibling model's 64 MiB are read into the cache.
    own = ["serving.tensor_parallel=1", 'model.repo="sparkops/page-cache-test"']
    with cluster_session(sim(*own)) as files:
        (ctx,) = contexts(files.cfg, files.facts)
        conn = files.group[ctx.name]
        folder = model_folder(ctx)
        blob, sibling = f"{folder}/blobs/{'ab' * 32}", f"{folder}-sibling/blobs/{'cd' * 32}"
        fill = 'mkdir -p "${1%/*}" && head -c "$2" /dev/zero > "$1" && cat "$1" > /dev/null'
        try:
            _sh(conn, fill, blob, str(BLOB))
            _sh(conn, fill, sibling, str(64 * MIB))
            assert _resident(conn, blob) >= 0.9 * BLOB
            # Ask for what lies between MemFree and MemAvailable as they are now (this machine's
            # kernel: the hosts share it): the page cache is in the way, eviction is the remedy.
            now = meminfo()
            want = now.free_bytes + (now.available_bytes - now.free_bytes) // 2
            gmu = round((want - memory.MARGIN_BYTES) / now.total_bytes, 3)
            assert memory.decide(now, gmu).action == memory.EVICT, now
            said, outcome = io.StringIO(), None
            with cluster_session(sim(*own, f"serving.gpu_memory_utilization={gmu}")) as session:
                try:
                    make_room(session, Progress(stream=said))
                except SparkopsError as exc:  # what is free after it depends on this machine's other work
                    outcome = exc
            assert _resident(conn, blob) <= 0.02 * BLOB
            assert _resident(conn, sibling) == 64 * MIB  # another folder's pages stay
        finally:
            _sh(conn, 'rm -rf -- "$1" "$1-sibling"', folder)
    lines = said.getvalue()
    assert "evicting the model's pages from the page cache on spark-a" in lines
    assert "spark-a: evicted 0.5 GiB of the model's 1 file, 0.5 GiB; MemFree " in lines
    if outcome is not None:  # then it names the node, the step and what was evicted
        text = outcome.render()
        assert "[spark-a] step 'preflight': vLLM would refuse to start" in text, text
        assert "evicted 0.5 GiB" in text or "other processes hold the rest" in text


def test_the_eviction_report_comes_back_as_json_over_ssh(sim):
    # The controller parses what the node printed: a model folder that is not there is no error.
    from sparkops.deploy.make_room import evict, model_folder
    cfg = sim('model.repo="sparkops/not-on-any-node"')
    with cluster_session(cfg) as session:
        ctx = contexts(cfg, session.facts)[1]
        report = evict(session.group[ctx.name], ctx)
    assert report["exists"] is False and report["root"] == model_folder(ctx)
    assert json.dumps(report)  # plain data
    assert parse_meminfo(report["meminfo_after"]).total_bytes == meminfo().total_bytes

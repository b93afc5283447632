"""`inv sync` on the simulated cluster: real rsync from spark-a to spark-b over the 169.254
"cable", real damage on the worker's disk, a real kill midway, a real too-small tmpfs; and,
once, the worker serving a model it got only through `up --sync`."""
from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import requests
from conftest import skip_or_fail

from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Silent
from sparkops.checks import profile
from sparkops.config import load_config
from sparkops.deploy.down import down
from sparkops.deploy.up import up
from sparkops.facts.recorded import facts_for_plan
from sparkops.models.smoke import REPO_ID as SMOKE_REPO
from sparkops.models.sync import sync
from sparkops.node_scripts.hf_cache import repo_folder
from sparkops.node_scripts.smoke_model import build_command
from sparkops.plan.context import contexts
from sparkops.sim.synthetic_model import REPO, make_synthetic_model
from sparkops.sim.tasks import write_override

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SIZE, SHARDS = 200_000_000, 100
HUB = Path(".cache/huggingface/hub")


@pytest.fixture(scope="module")
def sim(sim_cluster, tmp_path_factory):
    if shutil.which("rsync") is None:
        skip_or_fail("rsync is not installed (scripts/sim-apt-packages.txt lists it)")
    override = tmp_path_factory.mktemp("sync") / "sparkops.local.toml"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARKOPS_LOCAL", str(override))
        write_override(sim_cluster, override)
        head = sim_cluster.host("spark-a").home / HUB / repo_folder(REPO)
        make_synthetic_model(head, SIZE, SHARDS)
        yield lambda *sets, repo=REPO: load_config(
            "smoke", "sim", environ={}, sets=[f'model.repo="{repo}"', *sets])
        for host in sim_cluster.hosts:
            shutil.rmtree(host.home / HUB / repo_folder(REPO), ignore_errors=True)


def worker_dir(cluster, repo=REPO) -> Path:
    """The worker's copy, as the controller sees the worker's private home."""
    return cluster.host("spark-b").home / HUB / repo_folder(repo)


def blob(cluster, name: str) -> Path:
    snapshot = next((worker_dir(cluster) / "snapshots").iterdir())
    return (snapshot / name).resolve()


def in_worker(cluster, *argv) -> str:
    res = cluster.host("spark-b").run(list(argv))
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_sync_copies_a_valid_cache_then_has_nothing_to_do(sim, sim_cluster):
    shutil.rmtree(worker_dir(sim_cluster), ignore_errors=True)
    report = sync(sim(), Silent())
    [node] = report.nodes
    assert node.verified and node.address == "169.254.100.12"  # the cable, not the LAN
    assert report.source_files == SHARDS + 4 and node.copied_bytes == report.source_bytes
    # Inside the worker: every snapshot link resolves to a blob (relative links kept).
    root = f"/root/{HUB}/{repo_folder(REPO)}"
    listing = in_worker(sim_cluster, "sh", "-c", f'for l in {root}/snapshots/*/*; do readlink -e "$l"; done')
    assert len(listing.split()) == SHARDS + 3 and all(f"{root}/blobs/" in p for p in listing.split())

    again = sync(sim(), Silent())
    assert again.nodes[0].verified and again.nodes[0].copied_files == 0 and again.nodes[0].hashed_bytes == 0
    assert again.seconds < 5  # measured ~0.4 s; benchmarks/sync_throughput.py has the numbers


def test_flipped_byte_truncation_and_deletion_are_repaired_exactly(sim, sim_cluster):
    sync(sim(), Silent())
    flipped = blob(sim_cluster, "model-00007-of-00100.safetensors")
    with open(flipped, "r+b") as handle:
        handle.seek(500_000)
        byte = handle.read(1)
        handle.seek(500_000)
        handle.write(bytes([byte[0] ^ 0x01]))
    report = sync(sim(), Silent())
    assert report.nodes[0].copied_files == 1 and report.nodes[0].repaired == [f"blobs/{flipped.name}"]
    assert report.nodes[0].verified

    truncated = blob(sim_cluster, "model-00011-of-00100.safetensors")
    size = truncated.stat().st_size
    with open(truncated, "r+b") as handle:
        handle.truncate(size // 2)
    deleted = blob(sim_cluster, "model-00013-of-00100.safetensors")
    deleted.unlink()
    link = next((worker_dir(sim_cluster) / "snapshots").iterdir()) / "config.json"
    link.unlink()
    report = sync(sim(), Silent())
    node = report.nodes[0]
    assert node.verified and node.copied_files == 3  # the two blobs and the link
    assert node.copied_bytes == (size - size // 2) + deleted.stat().st_size
    assert node.sent_bytes < size // 2 + deleted.stat().st_size + 1  # the truncated one resumed
    assert link.is_symlink() and link.resolve().is_file()
    assert sync(sim(), Silent(), full=True).nodes[0].copied_files == 0  # every byte re-hashed: equal


def test_preflight_fails_a_partly_synced_worker_before_vllm_would(sim, sim_cluster):
    """config.json is there, a shard is cut short: the size fact read before every `up` says
    so (names the node and the sizes, suggests sync); after a sync the check passes."""
    cfg = sim()
    sync(cfg, Silent())
    truncated = blob(sim_cluster, "model-00021-of-00100.safetensors")
    size = truncated.stat().st_size
    with open(truncated, "r+b") as handle:
        handle.truncate(size - 1000)

    def model_checks():
        facts, _ = facts_for_plan(cfg, "live")  # live facts from every node, as `up` reads them
        return {c.node: c for c in profile.model(cfg, contexts(cfg, facts, all_nodes=True), "--profile smoke")}
    found = model_checks()
    assert found["spark-a"].status == "ok"
    assert found["spark-b"].status == "fail" and "only partly synced" in found["spark-b"].message
    assert found["spark-b"].evidence["blob_bytes"] == found["spark-a"].evidence["blob_bytes"] - 1000
    assert found["spark-b"].fix.startswith("`inv sync --profile smoke`")
    sync(cfg, Silent())
    assert model_checks()["spark-b"].status == "ok"


def test_interrupted_copy_resumes_and_ends_verified(sim, sim_cluster):
    shutil.rmtree(worker_dir(sim_cluster), ignore_errors=True)
    head = sim_cluster.host("spark-a")
    failure: list[BaseException] = []

    def first():
        try:
            sync(sim(), Silent(), streams=1)
        except BaseException as exc:  # the kill makes it fail: that is the point
            failure.append(exc)
    thread = threading.Thread(target=first)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill rsync on the head once a part has arrived
        blobs = worker_dir(sim_cluster) / "blobs"
        copied = sum(p.stat().st_size for p in blobs.iterdir()) if blobs.is_dir() else 0
        if copied > SIZE // 5:
            pids = head.run(["pgrep", "-x", "rsync"]).stdout.split()
            if pids:
                head.run(["kill", "-9", *pids])
                break
        time.sleep(0.01)
    thread.join(60)
    assert failure and isinstance(failure[0], SparkopsError) and "rsync" in failure[0].render()
    there = sum(p.stat().st_size for p in (worker_dir(sim_cluster) / "blobs").iterdir())
    assert SIZE // 5 < there < SIZE

    report = sync(sim(), Silent())
    node = report.nodes[0]
    assert node.verified and node.copied_bytes <= SIZE - there + 100_000
    assert node.sent_bytes <= node.copied_bytes + 100_000


def test_too_small_target_disk_is_refused_before_copying(sim, sim_cluster):
    target = f"/root/{HUB}/{repo_folder(REPO)}"
    in_worker(sim_cluster, "mkdir", "-p", target)
    in_worker(sim_cluster, "mount", "-t", "tmpfs", "-o", "size=64m", "sparkops-test-small", target)
    try:
        with pytest.raises(SparkopsError) as err:
            sync(sim(), Silent())
        text = err.value.render()
        assert "not enough disk space" in text and "nothing was copied" in text
        assert "[spark-b] needs 200.0 MB" in text and "67.1 MB free" in text, text
        assert in_worker(sim_cluster, "ls", "-A", target) == ""
    finally:
        in_worker(sim_cluster, "umount", target)


@pytest.mark.vllm
def test_up_sync_gives_the_worker_the_model_and_it_serves_offline(sim, sim_cluster, vllm_venv):
    head, worker = sim_cluster.host("spark-a"), sim_cluster.host("spark-b")
    res = head.run(build_command(vllm_venv / "bin" / "python", Path("/root/.cache/huggingface")),
                   timeout=300)  # the smoke model on the head only
    assert res.returncode == 0, res.stderr
    shutil.rmtree(worker_dir(sim_cluster, SMOKE_REPO), ignore_errors=True)
    shutil.rmtree(worker.home / ".cache" / "huggingface" / "sparkops-build", ignore_errors=True)
    cfg = sim(f"cluster.venv={json.dumps(str(vllm_venv))}", repo=SMOKE_REPO)
    try:
        result = up(cfg, progress=Silent(), sync_model=True)
        reply = requests.post(f"{result.url}/v1/completions", timeout=120, json={
            "model": "smoke", "prompt": "Hi", "max_tokens": 4, "temperature": 0}).json()
        assert reply["usage"]["completion_tokens"] == 4
        assert (worker_dir(sim_cluster, SMOKE_REPO) / "refs" / "main").is_file()
    finally:
        down(cfg, progress=Silent())

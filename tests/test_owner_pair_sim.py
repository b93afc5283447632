"""A pair as its owner runs it: `inv` on the head itself (its node is `host = "local"`), as an
unprivileged user with a home of its own, the worker reached over SSH as that user, who is
not root there either (sparkops.sim's owner, layout.OWNER). Everything below is `inv` run
inside the simulated head exactly as the owner would type it: the smoke model built on both
nodes, copied to the worker by `up --sync`, served with an API key that a stranger on the LAN lacks, checked
and stopped; and root's files left in a cache found with the fix."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from sparkops.apply.ready import headers
from sparkops.config.toml_files import read_toml
from sparkops.node_scripts.hf_cache import repo_folder
from sparkops.node_scripts.smoke_model import REPO_ID
from sparkops.sim import layout
from sparkops.sim.tasks import write_override

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.vllm]

ROOT = Path(__file__).resolve().parents[1]
OVERRIDE = f"{layout.OWNER_HOME}/sparkops.local.toml"
SMOKE = Path(".cache/huggingface/hub") / repo_folder(REPO_ID)


@pytest.fixture(scope="module")
def pair(sim_cluster, vllm_venv):
    """`inv(*args)` run inside spark-a as its owner, with the owner's own override file."""
    head = sim_cluster.host("spark-a")
    override = head.owner_home / "sparkops.local.toml"
    write_override(sim_cluster, override, nodes=sim_cluster.owner_nodes(head_local=True))
    subprocess.run(["chown", f"{layout.OWNER_UID}:{layout.OWNER_UID}", str(override)], check=True)
    env = {"SPARKOPS_LOCAL": OVERRIDE, "SPARKOPS_CLUSTER__VENV": json.dumps(str(vllm_venv))}

    def inv(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "invoke", *args]
        t0 = time.monotonic()
        done = subprocess.run(sim_cluster.owner_argv(head, argv, cwd=str(ROOT), env=env),
                              capture_output=True, text=True, timeout=timeout)
        print(f"inv {' '.join(args)}: rc {done.returncode} in {time.monotonic() - t0:.1f}s")
        return done
    inv.key = read_toml(override)["secrets"]["api_key"]
    yield inv
    inv("down", "--cluster", "sim")
    override.unlink()


def owners(path: Path) -> set[int]:
    return {p.lstat().st_uid for p in [path, *path.rglob("*")]}


def vllm_uids(host) -> set[int]:
    """The uids of the host's vLLM processes (read from /proc, as root on this machine)."""
    uids = set()
    for pid in host.pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if b"vllm" in cmdline:
            uids.add(int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1]))
    return uids


def test_the_owner_builds_copies_serves_and_stops_from_the_head(pair, sim_cluster):
    head, worker = sim_cluster.host("spark-a"), sim_cluster.host("spark-b")
    built = pair("smoke-model", "--cluster", "sim")
    assert built.returncode == 0, built.stderr
    for host in (head, worker):
        assert (host.owner_home / SMOKE / "refs" / "main").is_file()
        assert owners(host.owner_home / ".cache") == {layout.OWNER_UID}

    # The worker loses its copy: `up --sync` copies it from the head over the cable, then serves
    # (the worker offline: HF_HUB_OFFLINE=1 in every served environment).
    shutil.rmtree(worker.owner_home / SMOKE)
    served = pair("up", "--profile", "smoke", "--cluster", "sim", "--sync")
    assert served.returncode == 0, served.stderr
    assert "[spark-b] copying" in served.stderr and "verified: copied" in served.stderr, served.stderr
    assert "via 169.254.100.12" in served.stderr
    assert owners(worker.owner_home / SMOKE) == {layout.OWNER_UID}
    assert "curl -H @<(inv api-key --header)" in served.stdout and pair.key not in served.stdout + served.stderr
    # A stranger on the LAN reaches the head's port but not the model; the owner's key does.
    url = f"http://{head.mgmt_ip}:8000"
    assert requests.get(f"{url}/v1/models", timeout=10).status_code == 401
    stranger = requests.post(f"{url}/v1/completions", timeout=10, json={"model": "smoke", "prompt": "Hi"})
    assert stranger.status_code == 401
    # What vLLM leaves open (it checks the key on /v1 paths only; docs/security.md says so).
    assert [requests.get(f"{url}/{path}", timeout=10).status_code for path in ("health", "metrics")] == [200, 200]
    listed = requests.get(f"{url}/v1/models", headers=headers(pair.key), timeout=10)
    assert listed.status_code == 200 and [m["id"] for m in listed.json()["data"]] == ["smoke"]
    with requests.post(f"{url}/v1/chat/completions", stream=True, timeout=120, headers=headers(pair.key), json={
            "model": "smoke", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}) as resp:
        chunks = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith(b"data: {")]
    assert chunks[-1]["usage"]["completion_tokens"] == 8  # TP=2 over the cable, streamed
    assert vllm_uids(head) == vllm_uids(worker) == {layout.OWNER_UID}  # nothing serves as root

    status = pair("status", "--cluster", "sim")
    assert status.returncode == 0 and "READY" in status.stdout, status.stdout + status.stderr
    logs = pair("logs", "--cluster", "sim", "--lines", "5")
    assert {"[spark-a:vllm]", "[spark-b:vllm]"} <= {line.split("]")[0] + "]" for line in logs.stdout.splitlines()}
    stopped = pair("down", "--cluster", "sim")
    assert stopped.returncode == 0, stopped.stderr
    assert vllm_uids(head) == vllm_uids(worker) == set()


def test_roots_files_in_a_cache_are_found_with_the_fix(pair, sim_cluster):
    worker = sim_cluster.host("spark-b")
    stray = worker.owner_home / ".cache" / "huggingface" / "hub" / "left-by-a-root-container"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_text("root wrote this")  # this test runs as root: the file is root's
    try:
        found = pair("check", "--cluster", "sim", "--quick")
        assert found.returncode == 1, found.stdout + found.stderr
        spark_b = found.stdout.split("spark-b\n")[1]
        assert "FAIL  caches.owner  files in the caches belong to root, not to ops: " in spark_b, found.stdout
        assert "hub/left-by-a-root-container" in spark_b
        assert f"fix: on spark-b: `sudo chown -R ops: {layout.OWNER_HOME}/.cache/huggingface" in spark_b
        refused = pair("up", "--profile", "smoke", "--cluster", "sim")
        assert refused.returncode == 1 and "caches.owner" in refused.stderr and "nothing was started" in refused.stderr
        assert vllm_uids(sim_cluster.host("spark-a")) == set()
    finally:
        stray.unlink()
    assert pair("check", "--cluster", "sim", "--quick").returncode == 0

"""`inv sync` on the simulated cluster: real copies from spark-a to spark-b over the 169.254
"cable" in both transports (SSH, and plain TCP with a one-time secret), real damage on the
worker's disk, real kills midway, a real too-small tmpfs. (The worker serving a model it got only through
`up --sync`: test_owner_pair_sim.py.) Both nodes are reached as their unprivileged owner
(layout.OWNER, a home of its own), as on a real pair: nothing runs as root there."""
from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Progress, Silent
from sparkops.checks import profile
from sparkops.config import load_config
from sparkops.facts.recorded import facts_for_plan
from sparkops.models import sync as sync_module
from sparkops.models.sync import sync
from sparkops.node_scripts.hf_cache import repo_folder
from sparkops.plan.context import contexts
from sparkops.sim import layout
from sparkops.sim.synthetic_model import REPO, make_synthetic_model
from sparkops.sim.tasks import write_override

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SIZE, SHARDS = 200_000_000, 100
HUB = Path(".cache/huggingface/hub")
ROOT = Path(__file__).resolve().parents[1]
TRANSPORTS = pytest.mark.parametrize("how", ["ssh", "tcp"])


def transfer_processes() -> dict[int, list[str]]:
    """Every node-side transfer.py process on this machine (the simulated hosts share its
    process table): pid -> its arguments after the script's text."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        text = next((i for i, a in enumerate(args) if "class Receiver" in a and "def listen(" in a), None)
        if text is not None and "python" in " ".join(args[:text]):
            found[int(pid)] = [a for a in args[text + 1:] if a]
    return found


def cable_listeners(cluster) -> list[str]:
    """Listening TCP addresses on the worker other than sshd's."""
    lines = in_worker(cluster, "ss", "-Htln").splitlines()
    return [addr for addr in (line.split()[3] for line in lines if line.strip()) if not addr.endswith(":22")]


def copied_bytes(cluster) -> int:
    blobs = worker_dir(cluster) / "blobs"
    return sum(p.stat().st_size for p in blobs.iterdir()) if blobs.is_dir() else 0


@pytest.fixture(scope="module")
def sim(sim_cluster, tmp_path_factory):
    override = tmp_path_factory.mktemp("sync") / "sparkops.local.toml"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARKOPS_LOCAL", str(override))
        write_override(sim_cluster, override, nodes=sim_cluster.owner_nodes(head_local=False))
        head = sim_cluster.host("spark-a").owner_home
        make_synthetic_model(head / HUB / repo_folder(REPO), SIZE, SHARDS)
        give_to_owner(head / ".cache")
        yield lambda *sets, repo=REPO: load_config(
            "smoke", "sim", environ={}, sets=[f'model.repo="{repo}"', *sets])
        for host in sim_cluster.hosts:
            shutil.rmtree(host.owner_home / HUB / repo_folder(REPO), ignore_errors=True)


def give_to_owner(path: Path) -> None:
    """What the test made as root, handed to the owner (as if the owner had made it)."""
    subprocess.run(["chown", "-R", f"{layout.OWNER_UID}:{layout.OWNER_UID}", str(path)], check=True)


def worker_dir(cluster, repo=REPO) -> Path:
    """The worker's copy, as the controller sees the worker owner's private home."""
    return cluster.host("spark-b").owner_home / HUB / repo_folder(repo)


def blob(cluster, name: str) -> Path:
    snapshot = next((worker_dir(cluster) / "snapshots").iterdir())
    return (snapshot / name).resolve()


def in_worker(cluster, *argv) -> str:
    """As root on the worker (the test's hand: mounts, firewall rules)."""
    res = cluster.host("spark-b").run(list(argv))
    assert res.returncode == 0, res.stderr
    return res.stdout


def as_owner(cluster, host: str, *argv) -> str:
    res = subprocess.run(cluster.owner_argv(host, list(argv)), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.mark.timing
@TRANSPORTS
def test_sync_copies_a_valid_cache_then_has_nothing_to_do(sim, sim_cluster, how):
    shutil.rmtree(worker_dir(sim_cluster), ignore_errors=True)
    report = sync(sim(), Silent(), transport_name=how)
    [node] = report.nodes
    assert node.verified and node.address == "169.254.100.12"  # the cable, not the LAN
    assert report.source_files == SHARDS + 4 and node.copied_bytes == report.source_bytes
    # Verified without a second read: the worker hashed each file as it wrote it, and the
    # check after the copy read nothing back.
    assert node.transport == how and node.written_hashed_bytes == report.source_bytes
    assert node.hashed_bytes == 0 and node.sent_bytes == report.source_bytes
    assert transfer_processes() == {}  # nothing left running on either host
    # Inside the worker: every snapshot link resolves to a blob (relative links kept).
    root = f"{layout.OWNER_HOME}/{HUB}/{repo_folder(REPO)}"
    listing = in_worker(sim_cluster, "sh", "-c", f'for l in {root}/snapshots/*/*; do readlink -e "$l"; done')
    assert len(listing.split()) == SHARDS + 3 and all(f"{root}/blobs/" in p for p in listing.split())
    # Written by the owner, as the owner: nothing of root's in its cache.
    assert {p.stat().st_uid for p in worker_dir(sim_cluster).rglob("*")} == {layout.OWNER_UID}

    again = sync(sim(), Silent())
    assert again.nodes[0].verified and again.nodes[0].copied_files == 0 and again.nodes[0].hashed_bytes == 0
    assert again.seconds < 5  # measured ~0.4 s; benchmarks/sync_throughput.py has the numbers


@TRANSPORTS
def test_flipped_byte_truncation_and_deletion_are_repaired_exactly(sim, sim_cluster, how):
    sync(sim(), Silent(), transport_name=how)
    flipped = blob(sim_cluster, "model-00007-of-00100.safetensors")
    with open(flipped, "r+b") as handle:
        handle.seek(500_000)
        byte = handle.read(1)
        handle.seek(500_000)
        handle.write(bytes([byte[0] ^ 0x01]))
    report = sync(sim(), Silent(), transport_name=how)
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
    report = sync(sim(), Silent(), transport_name=how)
    node = report.nodes[0]
    assert node.verified and node.copied_files == 3  # the two blobs and the link
    assert node.copied_bytes == (size - size // 2) + deleted.stat().st_size
    assert node.sent_bytes < size // 2 + deleted.stat().st_size + 1  # the truncated one resumed
    assert link.is_symlink() and link.resolve().is_file()
    assert node.hashed_bytes < size  # the resumed file's prefix was read, no copied file was
    full = sync(sim(), Silent(), full=True, transport_name=how).nodes[0]
    assert full.copied_files == 0 and full.hashed_bytes >= SIZE  # every byte read again: equal


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


@TRANSPORTS
def test_interrupted_copy_resumes_and_ends_verified(sim, sim_cluster, how):
    """The sender on the head is killed (-9) a fifth of the way in: the sync fails saying so,
    the receiver on the worker ends too, and the next sync appends the missing tails."""
    shutil.rmtree(worker_dir(sim_cluster), ignore_errors=True)
    failure: list[BaseException] = []

    def first():
        try:
            sync(sim(), Silent(), streams=1, transport_name=how)
        except BaseException as exc:  # the kill makes it fail: that is the point
            failure.append(exc)
    thread = threading.Thread(target=first)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if copied_bytes(sim_cluster) > SIZE // 5:
            senders = [pid for pid, args in transfer_processes().items() if args[:1] == ["send"]]
            if senders:
                os.kill(senders[0], signal.SIGKILL)
                break
        time.sleep(0.01)
    thread.join(60)
    assert failure and isinstance(failure[0], SparkopsError), failure
    assert "the copy stopped" in failure[0].render() and "resumes" in failure[0].render()
    there = copied_bytes(sim_cluster)
    assert SIZE // 5 < there < SIZE
    deadline = time.monotonic() + 10
    while transfer_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert transfer_processes() == {}  # the receiver (or listener) ended with the sender

    report = sync(sim(), Silent(), transport_name=how)
    node = report.nodes[0]
    assert node.verified and node.copied_bytes <= SIZE - there + 100_000
    assert node.sent_bytes <= node.copied_bytes + 100_000


def test_a_file_changed_on_the_worker_during_the_copy_is_caught(sim, sim_cluster):
    """A shard already written (and hashed as written) is altered while the copy goes on:
    its key changed, so the check reads it, finds it wrong, and the second attempt copies it."""
    shutil.rmtree(worker_dir(sim_cluster), ignore_errors=True)
    manifest_sizes = {p.name: p.stat().st_size for p in
                      (sim_cluster.host("spark-a").owner_home / HUB / repo_folder(REPO) / "blobs").iterdir()}
    hit: list[Path] = []
    complete_since: dict[Path, float] = {}

    def scribble():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not hit:
            blobs = worker_dir(sim_cluster) / "blobs"
            for p in blobs.iterdir() if blobs.is_dir() else []:
                if p.stat().st_size == manifest_sizes[p.name]:
                    complete_since.setdefault(p, time.monotonic())
            # A file finished a few clock ticks ago (a write in the very tick of the receiver's
            # last one, keeping the size, is the one change file times cannot show).
            done = [p for p, t in complete_since.items() if time.monotonic() - t > 0.03]
            if done and copied_bytes(sim_cluster) < SIZE * 0.7:
                with open(done[0], "r+b") as handle:
                    handle.write(b"\0\1\2\3")
                hit.append(done[0])
            time.sleep(0.005)
    thread = threading.Thread(target=scribble)
    thread.start()
    report = sync(sim(), Silent(), streams=1)
    thread.join()
    node = report.nodes[0]
    assert hit, "the copy ended before the test could change a file"
    assert node.verified and f"blobs/{hit[0].name}" in node.repaired
    assert node.copied_files == (SHARDS + 4) + (SHARDS + 3) + 1  # files and links, then that file again


def test_tcp_secret_stays_secret_and_its_receiver_is_gone_after(sim, sim_cluster, monkeypatch):
    """The one-time secret never shows in any process's argv or environment on this machine
    (both simulated hosts included) while the sync runs, nor in any file under either host's
    home or sparkops' folders after it; the receiver listens on the cable only, and is gone."""
    shutil.rmtree(worker_dir(sim_cluster), ignore_errors=True)
    made: list[str] = []
    real = sync_module.one_time_secret
    monkeypatch.setattr(sync_module, "one_time_secret", lambda: made.append(real()) or made[-1])
    seen, listening, stop = [], [], threading.Event()

    def watch():
        while not stop.is_set():
            for pid in filter(str.isdigit, os.listdir("/proc")):
                for part in ("cmdline", "environ"):
                    try:
                        data = Path(f"/proc/{pid}/{part}").read_bytes()
                    except OSError:
                        continue
                    if made and made[0].encode() in data:
                        seen.append((pid, part))
            listening.extend(cable_listeners(sim_cluster))
            stop.wait(0.02)
    thread = threading.Thread(target=watch)
    thread.start()
    said = io.StringIO()
    try:
        report = sync(sim(), Progress(stream=said), transport_name="tcp")
    finally:
        stop.set()
        thread.join()
    assert report.nodes[0].verified and report.nodes[0].transport == "tcp" and made
    assert seen == [] and made[0] not in said.getvalue()
    # What the user sees: the copy per node with bytes and rate (and time left while it runs).
    assert "spark-b      copied: 200.0 MB of 200.0 MB (" in said.getvalue() and "MB/s)" in said.getvalue()
    assert listening and all(addr.startswith("169.254.100.12:") for addr in listening), listening
    assert transfer_processes() == {} and cable_listeners(sim_cluster) == []
    found = subprocess.run(["grep", "-rl", "--exclude-dir=blobs", made[0],
                            *(str(h.owner_home) for h in sim_cluster.hosts)],
                           capture_output=True, text=True)
    assert found.returncode == 1 and found.stdout == "", found


def test_killed_inv_sync_over_tcp_leaves_nothing_running(sim, sim_cluster):
    """`inv sync --transport tcp` killed with -9 (no cleanup of its own can run): the sender
    on the head and the listener on the worker notice their SSH sessions end and stop."""
    shutil.rmtree(worker_dir(sim_cluster), ignore_errors=True)
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "sync", "--profile", "smoke", "--cluster", "sim",
                             "--transport", "tcp", "--streams", "1", "--set", f'model.repo="{REPO}"'],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while copied_bytes(sim_cluster) < SIZE // 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        running = {tuple(args[:1]) for args in transfer_processes().values()}
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert SIZE // 10 <= copied_bytes(sim_cluster) < SIZE, "the copy was not under way when killed"
    assert {("send",), ("listen",)} <= running, running
    deadline = time.monotonic() + 15
    while transfer_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert transfer_processes() == {} and cable_listeners(sim_cluster) == []
    assert sync(sim(), Silent(), transport_name="tcp").nodes[0].verified  # and it resumes


def test_too_small_target_disk_is_refused_before_copying(sim, sim_cluster):
    target = f"{layout.OWNER_HOME}/{HUB}/{repo_folder(REPO)}"
    as_owner(sim_cluster, "spark-b", "mkdir", "-p", target)
    in_worker(sim_cluster, "mount", "-t", "tmpfs", "-o", f"size=64m,uid={layout.OWNER_UID},gid={layout.OWNER_UID}",
              "sparkops-test-small", target)
    try:
        with pytest.raises(SparkopsError) as err:
            sync(sim(), Silent())
        text = err.value.render()
        assert "not enough disk space" in text and "nothing was copied" in text
        assert "[spark-b] needs 200.0 MB" in text and "67.1 MB free" in text, text
        assert in_worker(sim_cluster, "ls", "-A", target) == ""
    finally:
        in_worker(sim_cluster, "umount", target)


@pytest.mark.timing
def test_ctrl_c_stops_the_copy_at_once_and_leaves_nothing_running(sim, sim_cluster):
    """Ctrl-C on `inv sync` (SIGINT to its process group, as a terminal sends it) while the head,
    reached over SSH, is sending: the command ends within seconds saying so, the transfer
    processes on both hosts end, and the copy stays resumable. The head's cable is slowed to
    200 Mbit/s (tc) so that the copy is surely still running when the signal comes."""
    head = sim_cluster.host("spark-a")
    shutil.rmtree(worker_dir(sim_cluster), ignore_errors=True)
    shape = ["tc", "qdisc", "add", "dev", layout.ROCE_IF, "root", "tbf", "rate", "200mbit", "burst", "256kb",
             "latency", "100ms"]
    assert head.run(shape).returncode == 0
    try:
        proc = subprocess.Popen([sys.executable, "-m", "invoke", "sync", "--profile", "smoke", "--cluster", "sim",
                                 "--set", f'model.repo="{REPO}"'], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + 60
        while copied_bytes(sim_cluster) < SIZE // 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        sent = time.monotonic()
        _, err = proc.communicate(timeout=40)
        took = time.monotonic() - sent
    finally:
        head.run(["tc", "qdisc", "del", "dev", layout.ROCE_IF, "root"])
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and "interrupted" in err and "Traceback" not in err, err
    assert took < 10, took
    assert copied_bytes(sim_cluster) < SIZE * 0.8
    deadline = time.monotonic() + 10
    while transfer_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert transfer_processes() == {}
    assert sync(sim(), Silent()).nodes[0].verified


@pytest.mark.timing
def test_tcp_blocked_by_a_firewall_fails_fast_with_the_fix(sim, sim_cluster):
    """The worker's firewall rejects TCP on the cable except SSH: the tcp transport fails at
    once, naming the node, the address and the way out; nothing is left listening."""
    shutil.rmtree(worker_dir(sim_cluster), ignore_errors=True)
    rule = ["INPUT", "-p", "tcp", "-d", "169.254.100.12", "!", "--dport", "22", "-j", "REJECT",
            "--reject-with", "tcp-reset"]
    in_worker(sim_cluster, "iptables", "-I", *rule)
    try:
        start = time.monotonic()
        with pytest.raises(SparkopsError) as err:
            sync(sim(), Silent(), transport_name="tcp")
        took = time.monotonic() - start
    finally:
        in_worker(sim_cluster, "iptables", "-D", *rule)
    text = err.value.render()
    assert "[spark-b]" in text and "to 169.254.100.12 (tcp) failed" in text and "refused" in text, text
    assert "firewall" in text and "--transport ssh" in text and took < 20
    assert transfer_processes() == {} and cable_listeners(sim_cluster) == []


def test_without_a_cable_address_nothing_goes_over_the_lan_unless_asked(sim, sim_cluster):
    """The worker's RoCE ports are down: sync refuses before copying anything, naming the node,
    what is missing and the fix; `--over-lan` copies over the worker's SSH address (the LAN),
    with the ssh transport only: tcp would put the weights in the clear on the LAN."""
    shutil.rmtree(worker_dir(sim_cluster), ignore_errors=True)
    worker = sim_cluster.host("spark-b")
    worker.set_roce_up(False)
    try:
        with pytest.raises(SparkopsError) as err:
            sync(sim(), Silent())
        text = err.value.render()
        assert "[spark-b]" in text and "no RoCE interface is up" in text and "is refused" in text, text
        assert "--over-lan" in text and "cluster.sync.over_lan" in text
        assert not worker_dir(sim_cluster).exists()
        with pytest.raises(SparkopsError, match="in the clear"):
            sync(sim(), Silent(), transport_name="tcp", over_lan=True)
        assert not worker_dir(sim_cluster).exists() and transfer_processes() == {}
        report = sync(sim(), Silent(), over_lan=True)
        assert report.nodes[0].verified and report.nodes[0].address == worker.mgmt_ip
    finally:
        sim_cluster.heal()

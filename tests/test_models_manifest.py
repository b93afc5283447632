"""The model manifest (run as the nodes run it: the file's text under a bare python3) and the
sync transports' pure parts (sparkops.models.transport), on real files in a temporary Hugging Face cache layout."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sparkops.models import transport
from sparkops.node_scripts import manifest
from sparkops.remote import openssh
from sparkops.sim.synthetic_model import make_synthetic_model

SOURCE = Path(manifest.__file__).read_text()


def run_script(*args: str, stdin: dict | list | None = None) -> dict:
    """Exactly how sync runs it on a node: `python3 -I -S -c <text of manifest.py> ...`."""
    res = subprocess.run([sys.executable, "-I", "-S", "-c", SOURCE, *args], capture_output=True,
                         text=True, input=json.dumps(stdin) if stdin is not None else "", check=True)
    return json.loads(res.stdout)


@pytest.fixture
def pair(tmp_path):
    head = tmp_path / "head" / "models--sparkops--synthetic"
    make_synthetic_model(head, 4_000_000, 8)
    worker = tmp_path / "worker" / "models--sparkops--synthetic"
    shutil.copytree(head, worker, symlinks=True)
    expected = run_script("scan", str(head), "--cache", str(tmp_path / "head.json"))
    return head, worker, expected, tmp_path / "worker.json"


def blob_of(root: Path, name: str) -> Path:
    link = next((root / "snapshots").iterdir()) / name
    return link.resolve()


def test_scan_lists_files_links_and_caches_hashes(pair, tmp_path):
    head, _, expected, _ = pair
    assert len(expected["files"]) == 12 and len(expected["links"]) == 11  # 8+3 blobs, refs/main
    assert expected["problems"] == [] and expected["hashed_bytes"] == expected["bytes"]
    target = next(iter(expected["links"].values()))
    assert target.startswith("../../blobs/")
    again = run_script("scan", str(head), "--cache", str(tmp_path / "head.json"))
    assert again["hashed_bytes"] == 0 and again["files"] == expected["files"]
    full = run_script("scan", str(head), "--cache", str(tmp_path / "head.json"), "--full")
    assert full["hashed_bytes"] == expected["bytes"]


def test_check_finds_each_kind_of_damage(pair):
    head, worker, expected, cache = pair
    args = ("check", str(worker), "--cache", str(cache))
    assert run_script(*args, stdin=expected)["verified"]

    flipped = blob_of(worker, "model-00001-of-00008.safetensors")
    data = bytearray(flipped.read_bytes())
    data[1000] ^= 0xFF
    stat = flipped.stat()
    flipped.write_bytes(bytes(data))
    os.utime(flipped, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # mtime put back: ctime still tells
    truncated = blob_of(worker, "model-00002-of-00008.safetensors")
    with open(truncated, "r+b") as handle:
        handle.truncate(1234)
    blob_of(worker, "model-00003-of-00008.safetensors").unlink()
    snapshot = next((worker / "snapshots").iterdir())
    (snapshot / "config.json").unlink()
    (worker / "blobs" / "stray.incomplete").write_bytes(b"x")  # hub's unfinished download: ignored
    (worker / "leftover").write_bytes(b"x")

    rel = lambda p: str(p.relative_to(worker))  # noqa: E731
    found = run_script(*args, stdin=expected)
    assert not found["verified"]
    assert found["wrong"] == [rel(flipped)]
    assert found["partial"] == {rel(truncated): 1234}
    assert found["missing"] == [rel(worker / "blobs" / Path(expected["links"][f"snapshots/{snapshot.name}/"
                                                                               "model-00003-of-00008.safetensors"]).name)]
    assert found["links"] == [f"snapshots/{snapshot.name}/config.json"]
    assert found["extra"] == ["leftover"]
    size = expected["files"][rel(truncated)][0]
    assert found["need_bytes"] == (size - 1234) + expected["files"][found["missing"][0]][0]
    assert found["free_bytes"] > 0 and found["fs_path"]


def test_random_weights_sync_only_the_config_and_tokenizer_of_a_whole_head(tmp_path):
    """The head holds the whole model; with random weights sync sends a worker only what vLLM
    reads besides the weights (and the blobs those links point to), and a worker holding just
    that checks as verified."""
    from sparkops.config.weights import WEIGHTLESS_PATTERNS
    from sparkops.models.sync import weightless
    head = tmp_path / "head" / "models--sparkops--synthetic"
    make_synthetic_model(head, 2_000_000, 4)
    full = run_script("scan", str(head), "--cache", str(tmp_path / "head.json"))
    part = weightless(full, list(WEIGHTLESS_PATTERNS), None)
    rev = next(iter((head / "snapshots").iterdir())).name
    assert sorted(part["links"]) == [f"snapshots/{rev}/config.json", f"snapshots/{rev}/generation_config.json"]
    assert sorted(part["files"]) == sorted(["refs/main"] + [
        "blobs/" + os.readlink(head / link).rsplit("/", 1)[1] for link in part["links"]])
    assert part["bytes"] == sum(size for size, _ in part["files"].values()) < 1000 < full["bytes"]

    worker = tmp_path / "worker" / "models--sparkops--synthetic"
    for rel in [*part["files"], *part["links"]]:
        (worker / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel in part["links"]:
            (worker / rel).symlink_to(part["links"][rel])
        else:
            shutil.copyfile(head / rel, worker / rel)
    body = {"files": part["files"], "links": part["links"]}
    assert run_script("check", str(worker), "--cache", str(tmp_path / "w.json"), stdin=body)["verified"]
    assert not run_script("check", str(worker), "--cache", str(tmp_path / "w.json"),
                          stdin={"files": full["files"], "links": full["links"]})["verified"]


def test_prune_deletes_only_inside_root(pair, tmp_path):
    _, worker, _, _ = pair
    outside = tmp_path / "outside"
    outside.write_text("keep")
    done = run_script("prune", str(worker), stdin=["refs/main", "../../outside", "blobs"])
    assert done["deleted"] == ["refs/main"] and outside.exists() and (worker / "blobs").is_dir()


def test_head_problems_corrupt_blob_and_dangling_link(pair, tmp_path):
    head, _, _, _ = pair
    blob = blob_of(head, "model-00004-of-00008.safetensors")
    with open(blob, "r+b") as handle:
        handle.write(b"rot")
    os.symlink("../../blobs/nothing", next((head / "snapshots").iterdir()) / "dangling.json")
    problems = run_script("scan", str(head), "--cache", str(tmp_path / "h.json"))["problems"]
    assert any("does not match its name" in p and blob.name in p for p in problems)
    assert any("dangling.json" in p for p in problems)


def test_ssh_argv_and_the_receiver_through_it():
    node = {"name": "spark-2", "host": "spark-2.local", "user": "me", "key": "/k", "port": 2222}
    ssh = openssh.ssh_command(node, {"known_hosts": "/kh", "connect_timeout_s": 5})
    assert ssh[:1] == ["ssh"] and "HostKeyAlias=spark-2.local" in ssh and "StrictHostKeyChecking=yes" in ssh
    assert ["-p", "2222"] == ssh[ssh.index("-p"):ssh.index("-p") + 2] and "UserKnownHostsFile=/kh" in ssh
    argv = transport.receive_over_ssh(ssh, "169.254.100.2", "rel/m; rm -rf ~", "c/m.json")
    assert argv[:len(ssh)] == ssh and argv[len(ssh)] == "169.254.100.2"
    remote = shlex.split(argv[-1])  # what the worker's shell gets back: the same argv, metacharacters inert
    assert remote[:2] == ["sh", "-c"] and remote[-4:] == ["receive", "rel/m; rm -rf ~", "--cache", "c/m.json"]


def test_run_piped_on_this_machine_large_stdin_lines_and_timeout():
    from sparkops.remote.connection import NodeConn
    from sparkops.remote.result import CommandTimeout
    conn = NodeConn({"name": "local", "host": "local"}, {})
    lines = []
    res = conn.run_piped(["sh", "-c", "wc -c; printf 'a\\rb\\n' >&2"], stdin="x" * 300_000, timeout=30,
                         on_line=lines.append)
    assert res.ok and res.stdout.strip() == "300000" and res.stderr == "a\rb\n"
    assert sorted(lines) == ["300000", "a", "b"]
    with pytest.raises(CommandTimeout):  # silent and never ending: killed at its timeout
        conn.run_piped(["sleep", "5"], stdin="", timeout=0.5)

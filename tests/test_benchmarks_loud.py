"""Benchmark scripts fail loudly: a case that moved fewer bytes or requests than planned stops
the script with a non-zero exit and a message naming the case (benchmarks/_checks.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

from _checks import PREFIX, CaseFailed, expect, expect_ok  # noqa: E402

# transfer.py's sender with one file of the plan dropped: the copy "succeeds" short.
SHORT_SENDER = """
import json, os, subprocess, sys
REAL = os.environ["REAL_TRANSFER"]
if sys.argv[1] != "send":
    os.execv(sys.executable, [sys.executable, REAL, *sys.argv[1:]])
job = json.loads(sys.stdin.readline())
job["streams"][0].pop()
proc = subprocess.Popen([sys.executable, REAL, "send"], stdin=subprocess.PIPE, text=True)
proc.stdin.write(json.dumps(job) + "\\n")
proc.stdin.flush()
sys.exit(proc.wait())  # the real sender exits by itself after its result line
"""


def test_expect_passes_when_all_planned_bytes_arrived():
    expect("raw_ssh_disk", "bytes received", 2_200_000_000, 2_200_000_000)
    expect_ok("raw_ssh_disk", 0, "")


def test_expect_names_the_case_that_moved_fewer_bytes():
    with pytest.raises(CaseFailed) as info:
        expect("raw_ssh_disk", "bytes received by the worker", 0, 2_200_000_000)
    assert info.value.code == f"{PREFIX}: raw_ssh_disk: bytes received by the worker: 0 of 2200000000 planned"
    assert info.value.case == "raw_ssh_disk"


def test_expect_ok_names_the_failed_step_with_its_stderr():
    with pytest.raises(CaseFailed) as info:
        expect_ok("raw_ssh_null", 1, "cat: '/root/.cache/huggingface/hub/x/blobs/*': No such file or directory")
    assert str(info.value.code).startswith(f"{PREFIX}: raw_ssh_null: exit status 1: cat: ")


def test_a_short_case_exits_non_zero_with_its_name_on_stderr():
    code = "from _checks import expect; expect('rsync_a', 'bytes received', 10, 11); print('rate printed')"
    res = subprocess.run([sys.executable, "-c", code], cwd=BENCH, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert "rate printed" not in res.stdout
    assert res.stderr.strip() == f"{PREFIX}: rsync_a: bytes received: 10 of 11 planned"


def _transfer_cores(tmp_path: Path, script: Path) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(BENCH / "transfer_cores.py"), "--gb", "0.004", "--files", "2", "--repeat", "1",
            "--streams", "1", "--script", str(script), "--out", str(tmp_path / "out.json")]
    env = {**os.environ, "REAL_TRANSFER": str(ROOT / "sparkops/node_scripts/transfer.py"),
           "PYTHONPATH": str(ROOT)}
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_transfer_cores_passes_when_every_byte_arrives(tmp_path):
    res = _transfer_cores(tmp_path, ROOT / "sparkops/node_scripts/transfer.py")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out.json").exists()


def test_transfer_cores_fails_naming_the_case_that_sent_fewer_bytes(tmp_path):
    short = tmp_path / "short_transfer.py"
    short.write_text(SHORT_SENDER)
    res = _transfer_cores(tmp_path, short)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"{PREFIX}: tcp_1: bytes sent: 2000000 of 4000000 planned" in res.stderr
    assert not (tmp_path / "out.json").exists()  # no result written for a short run


def test_nccl_summary_fails_on_a_size_that_summed_wrong(tmp_path):
    line = ('{"sparkops_allreduce": 1, "iters": 20, "results": [{"bytes": 1048576, "iters": 20, "correct": true}, '
            '{"bytes": 2097152, "iters": 20, "correct": false}]}')
    log = tmp_path / "run.log"
    log.write_text("NCCL INFO something\n" + line + "\n")
    res = subprocess.run([sys.executable, str(BENCH / "nccl_allreduce_summary.py"), str(log), "--device", "d",
                          "--command", "c"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert f"{PREFIX}: run.log: 2097152 bytes: all-reduce sum correct: False of True planned" in res.stderr


@pytest.mark.cluster
@pytest.mark.slow
def test_sync_throughput_fails_naming_the_case_when_the_head_cannot_see_the_model(tmp_path):
    """The failure a fresh machine showed: the head's glob of the model matches nothing (here: the
    controller's /root/.cache kept visible in the hosts hides theirs). Before, the pipe hid it
    and a copy of nothing read thousands of MB/s; now the first case stops the run."""
    from sim_fixtures import require_sim
    require_sim()
    if not Path("/root/.cache").is_dir():
        pytest.skip("needs a /root/.cache on the controller to hide the hosts' own")
    argv = [sys.executable, str(BENCH / "sync_throughput.py"), "--gb", "0.01", "--files", "2", "--repeat", "1",
            "--streams", "auto", "--transports", "ssh", "--out", str(tmp_path / "out.json")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARKOPS_SIM_KEEP": "/root/.cache"}
    res = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"{PREFIX}: raw_ssh_null: exit status 1: " in res.stderr
    assert "no match: /root/.cache/huggingface/hub/" in res.stderr
    assert "MB/s" not in res.stdout
    assert not (tmp_path / "out.json").exists()

"""The cluster's one-operation lock (apply/lock.py, node_scripts/lock.py) on the `local` cluster,
held by real processes: a second caller is told who holds it, a holder killed with SIGKILL frees
it at once, one that hangs frees it when its heartbeat stops, --wait queues behind the holder and
reads the facts once its turn comes, nested holds in one process share it, two users of one head
share one lock, and `download` takes it too."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import free_port

from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Progress, Silent
from sparkops.config import load_config
from sparkops.facts.session import cluster_session
from sparkops.node_scripts import python_argv


@pytest.fixture
def sets(tmp_path):
    return [f"cluster.paths.work_dir={json.dumps(str(tmp_path / 'work'))}",
            f"cluster.paths.hf_home={json.dumps(str(tmp_path / 'hf'))}",
            f"cluster.paths.lock={json.dumps(str(tmp_path / 'sparkops.lock'))}"]


HOLDER = textwrap.dedent("""
    import json, socket, sys, time
    from sparkops.apply.lock import cluster_lock
    from sparkops.base.progress import Progress
    from sparkops.config import load_config
    from sparkops.facts.session import cluster_session
    opts = json.loads(sys.argv[1])
    cfg = load_config("smoke", "local", sets=sys.argv[2:], environ={})
    with cluster_session(cfg, gather=False) as s, cluster_lock(s, "up", progress=Progress(), **opts["lock"]):
        if opts["hog_api_port"]:  # what it changes on the head while it holds the lock
            hog = socket.create_server(("127.0.0.1", cfg.cluster["ports"]["api"]))
        print("held", flush=True)
        time.sleep(30)
""")


def hold_in_another_process(sets: list[str], hog_api_port: bool = False, **lock_options) -> subprocess.Popen:
    opts = {"lock": lock_options, "hog_api_port": hog_api_port}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, json.dumps(opts), *sets],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held", proc.stderr.read()
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def read_until(stream, text: str, timeout: float) -> str:
    """What a process writes to `stream` until `text` appears (or `timeout` passes)."""
    import selectors
    said, deadline = b"", time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        while text.encode() not in said and time.monotonic() < deadline:
            if sel.select(0.2):
                chunk = os.read(stream.fileno(), 65536)
                if not chunk:
                    break
                said += chunk
    return said.decode(errors="replace")


def signal_soon(proc: subprocess.Popen, sig: int, after: float = 1.5) -> None:
    def send():
        time.sleep(after)
        os.kill(proc.pid, sig)
    threading.Thread(target=send, daemon=True).start()


def test_a_second_caller_is_told_who_holds_the_lock_and_sigkill_frees_it(sets):
    from sparkops.apply.lock import cluster_lock
    holder = hold_in_another_process(sets)
    try:
        cfg = load_config("smoke", "local", sets=sets, environ={})
        with cluster_session(cfg, gather=False) as session:
            t0 = time.monotonic()
            with pytest.raises(SparkopsError) as e, cluster_lock(session, "down"):
                pass
            assert time.monotonic() - t0 < 5  # refused at once, not after a timeout
            text = e.value.render()
            assert "is busy" in text and "`inv up`" in text and f"pid {holder.pid}" in text, text
            assert "--wait" in text
            holder.send_signal(signal.SIGKILL)
            holder.wait()
            with cluster_lock(session, "down"):  # free at once: the kernel dropped it with the holder
                pass
    finally:
        stop(holder)


def test_wait_queues_behind_the_holder(sets, capsys):
    from sparkops.apply.lock import cluster_lock
    holder = hold_in_another_process(sets)
    cfg = load_config("smoke", "local", sets=sets, environ={})
    try:
        with cluster_session(cfg, gather=False) as session:
            signal_soon(holder, signal.SIGTERM)
            t0 = time.monotonic()
            with cluster_lock(session, "down", wait=30, progress=Progress(stream=sys.stdout)):
                waited = time.monotonic() - t0
            assert 1.0 < waited < 15
            assert "waiting for `inv up`" in capsys.readouterr().out
            with pytest.raises(SparkopsError) as e:
                other = hold_in_another_process(sets)
                try:
                    with cluster_lock(session, "down", wait=0.5):
                        pass
                finally:
                    stop(other)
            assert "did not finish in time" in e.value.message
    finally:
        stop(holder)


def test_a_queued_up_reads_the_facts_once_its_turn_comes(sets):
    """The holder keeps the API port busy (as a serving deployment would) and frees it before it
    lets go of the lock (as `down` does). An `up` queued behind it must plan against the cluster
    it finds when its turn comes: the port free. Its preflight still stops it (no model in the
    empty cache), which keeps the test fast, but names no busy port."""
    from sparkops.deploy.up import up
    port = free_port()
    sets = [*sets, f"cluster.ports.api={port}"]
    holder = hold_in_another_process(sets, hog_api_port=True)
    try:
        with pytest.raises(OSError):
            socket.create_server(("127.0.0.1", port))  # the holder has it
        cfg = load_config("smoke", "local", sets=sets, environ={})
        signal_soon(holder, signal.SIGTERM)
        with pytest.raises(SparkopsError) as e:
            up(cfg, progress=Silent(), wait=30)
        text = e.value.render()
        assert e.value.step == "preflight" and "smoke-tiny-llama" in text, text
        assert f"port {port} is already in use" not in text, text
    finally:
        stop(holder)


def test_a_holder_that_hangs_loses_the_lock_when_its_heartbeat_stops(sets):
    """SIGSTOP leaves the holder's pipe to the lock script open, as a dead SSH link that never
    closes leaves the session open on the head: only the missing heartbeat can free the lock.
    A holder that lives keeps it past that limit."""
    from sparkops.apply.lock import cluster_lock
    beats = {"beat": 0.3, "silence": 1.5}
    holder = hold_in_another_process(sets, **beats)
    cfg = load_config("smoke", "local", sets=sets, environ={})
    try:
        with cluster_session(cfg, gather=False) as session:
            time.sleep(2.5)  # past the limit, beating
            with pytest.raises(SparkopsError, match="is busy"), cluster_lock(session, "down"):
                pass
            holder.send_signal(signal.SIGSTOP)
            t0 = time.monotonic()
            with cluster_lock(session, "down", wait=30, **beats):
                waited = time.monotonic() - t0
            assert waited < 15  # the limit and a beat; without the heartbeat: never
            holder.send_signal(signal.SIGCONT)  # it wakes up to find the lock gone, and says so
            said = read_until(holder.stderr, "the cluster lock is no longer held", 10)
            assert "the cluster lock is no longer held" in said, said
    finally:
        holder.send_signal(signal.SIGCONT)
        stop(holder)


def test_a_waiter_that_falls_silent_gives_up_instead_of_taking_the_lock_later(tmp_path):
    """The lock script itself, its stdin open and silent: it stops waiting (and never takes the
    lock) once the limit passes, instead of waiting out its --wait."""
    import fcntl
    path = tmp_path / "sparkops.lock"
    with open(path, "w") as taken:
        fcntl.flock(taken, fcntl.LOCK_EX)
        proc = subprocess.Popen(python_argv("lock.py", str(path), "{}", "--wait", "60", "--silence", "1"),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:  # our end of its stdin stays open all along (communicate() would close it)
            assert proc.wait(timeout=20) == 6
            out = proc.stdout.read()  # type: ignore[union-attr]
        finally:
            stop(proc)
    assert out.split() == ["busy", "{}"], out


def test_nested_holds_in_one_process_share_the_lock(sets):
    from sparkops.apply.lock import cluster_lock
    cfg = load_config("smoke", "local", sets=sets, environ={})
    with cluster_session(cfg, gather=False) as session:
        with cluster_lock(session, "bench-all"), cluster_lock(session, "up"), cluster_lock(session, "down"):
            pass
        with cluster_lock(session, "up"):  # and it was released at the end
            pass


def test_download_is_refused_while_another_operation_holds_the_lock(sets, tmp_path):
    """`download` writes the cache `sync` and `up` read: it takes the lock, and with --wait
    queues behind the holder."""
    from sparkops.models.download import download
    src = tmp_path / "model"
    src.mkdir()
    (src / "config.json").write_text('{"model_type": "llama"}')
    cfg = load_config("smoke", "local", sets=sets, environ={})
    holder = hold_in_another_process(sets)
    try:
        with pytest.raises(SparkopsError) as e:
            download(cfg, local_dir=str(src), progress=Silent())
        assert "is busy" in e.value.message and "`inv up`" in e.value.message, e.value.render()
        assert not (tmp_path / "hf").exists()  # nothing written
        signal_soon(holder, signal.SIGTERM)
        done = download(cfg, local_dir=str(src), progress=Silent(), wait=30)
        assert (Path(done.snapshot) / "config.json").read_text() == '{"model_type": "llama"}'
    finally:
        stop(holder)


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def shared_folder():
    """A folder like /run/lock: root's, world-writable and sticky, with fs.protected_regular on
    (as on Ubuntu), under which the kernel refuses O_CREAT on another user's file there even
    when it exists. Restored after: it is a setting of the whole machine."""
    import shutil
    import tempfile
    knob = Path("/proc/sys/fs/protected_regular")
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to act as a second user")
    folder = Path(tempfile.mkdtemp(prefix="sparkops-lock-", dir="/tmp"))
    folder.chmod(0o1777)
    before = knob.read_text()
    try:
        knob.write_text("1")
    except OSError:
        pytest.skip("fs.protected_regular cannot be set here")
    try:
        yield folder
    finally:
        knob.write_text(before)
        shutil.rmtree(folder)


def test_two_users_of_one_head_share_one_lock(shared_folder, tmp_path):
    """`nobody` takes the lock first (so the file is nobody's); root, with the same config, is
    refused naming nobody's operation; once nobody lets go, root takes it (opening nobody's file
    where O_CREAT would be refused) and nobody is refused naming root's."""
    from sparkops.apply.lock import cluster_lock
    path = shared_folder / "sparkops.lock"
    sets = [f"cluster.paths.work_dir={json.dumps(str(tmp_path / 'work'))}",
            f"cluster.paths.lock={json.dumps(str(path))}"]
    theirs = {"verb": "sync", "pid": 4242, "user": "nobody", "host": "laptop", "since": "2026-12-02T01:12:09+00:00"}
    nobody = subprocess.Popen(NOBODY + python_argv("lock.py", str(path), json.dumps(theirs), "--silence", "60"),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/")
    try:
        assert nobody.stdout is not None and nobody.stdout.readline().strip() == "locked"
        made = path.stat()
        assert made.st_uid == 65534 and made.st_mode & 0o777 == 0o666  # every user can open it
        cfg = load_config("smoke", "local", sets=sets, environ={})
        with cluster_session(cfg, gather=False) as session:
            with pytest.raises(SparkopsError) as e, cluster_lock(session, "up"):
                pass
            assert "`inv sync` (pid 4242, nobody@laptop" in e.value.message, e.value.render()
            assert str(path) in e.value.render()
            nobody.stdin.close()  # type: ignore[union-attr]
            assert nobody.wait(10) == 0
            with cluster_lock(session, "up"):
                again = subprocess.run(NOBODY + python_argv("lock.py", str(path), "{}"), cwd="/",
                                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
                assert again.returncode == 3, again
                verb, _, rest = again.stdout.partition(" ")
                mine = json.loads(rest)
                assert verb == "busy" and mine["verb"] == "up" and mine["pid"] == os.getpid(), again.stdout
    finally:
        stop(nobody)


def test_a_lock_file_that_is_a_link_is_refused(tmp_path):
    """Never through a link: one planted at the lock's path is refused, naming the fix."""
    from sparkops.apply.lock import cluster_lock
    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    (tmp_path / "sparkops.lock").symlink_to(target)
    cfg = load_config("smoke", "local", environ={}, sets=[
        f"cluster.paths.lock={json.dumps(str(tmp_path / 'sparkops.lock'))}"])
    with cluster_session(cfg, gather=False) as session:
        with pytest.raises(SparkopsError) as e, cluster_lock(session, "up"):
            pass
    assert "could not take the lock" in e.value.message and "cluster.paths.lock" in (e.value.fix or "")
    assert target.read_text() == "keep me"


def test_without_run_lock_the_lock_lives_in_tmp(tmp_path):
    from sparkops.node_scripts.lock import lock_file
    absent, present = tmp_path / "run" / "lock", tmp_path / "here"
    present.mkdir()
    fallback = {str(absent): "/tmp", str(present): "/tmp"}
    assert lock_file(str(absent / "sparkops.lock"), fallback) == "/tmp/sparkops.lock"
    assert lock_file(str(present / "sparkops.lock"), fallback) == str(present / "sparkops.lock")
    assert lock_file("~/x.lock", fallback) == os.path.expanduser("~/x.lock")

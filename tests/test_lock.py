"""The cluster's one-operation lock (apply/lock.py, node_scripts/lock.py) on the `local` cluster,
held by real processes: a second caller is told who holds it, a holder killed with SIGKILL frees
it at once, --wait queues behind the holder, nested holds in one process share it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Progress
from sparkops.config import load_config
from sparkops.facts.session import cluster_session


@pytest.fixture
def sets(tmp_path):
    return [f"cluster.paths.work_dir={json.dumps(str(tmp_path / 'work'))}"]


HOLDER = textwrap.dedent("""
    import sys, time
    from sparkops.apply.lock import cluster_lock
    from sparkops.base.progress import Silent
    from sparkops.config import load_config
    from sparkops.facts.session import cluster_session
    cfg = load_config("smoke", "local", sets=sys.argv[1:], environ={})
    with cluster_session(cfg, gather=False) as s, cluster_lock(s, "up", progress=Silent()):
        print("held", flush=True)
        time.sleep(30)
""")


def hold_in_another_process(sets: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, *sets], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


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
        holder.kill()
        holder.wait()


def test_wait_queues_behind_the_holder(sets, capsys):
    from sparkops.apply.lock import cluster_lock
    holder = hold_in_another_process(sets)
    cfg = load_config("smoke", "local", sets=sets, environ={})
    try:
        with cluster_session(cfg, gather=False) as session:
            def stop_holder_soon():
                time.sleep(1.5)
                os.kill(holder.pid, signal.SIGTERM)
            import threading
            threading.Thread(target=stop_holder_soon, daemon=True).start()
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
                    other.kill()
                    other.wait()
            assert "did not finish in time" in e.value.message
    finally:
        holder.kill()
        holder.wait()


def test_nested_holds_in_one_process_share_the_lock(sets):
    from sparkops.apply.lock import cluster_lock
    cfg = load_config("smoke", "local", sets=sets, environ={})
    with cluster_session(cfg, gather=False) as session:
        with cluster_lock(session, "bench-all"), cluster_lock(session, "up"), cluster_lock(session, "down"):
            pass
        with cluster_lock(session, "up"):  # and it was released at the end
            pass

"""`up`/`status`/`down` on the `local` cluster with real vLLM (CPU build) and the smoke model:
the README's first quick-start path, end to end."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import free_port

from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Silent
from sparkops.config import load_config
from sparkops.deploy.down import down
from sparkops.deploy.status import collect
from sparkops.deploy.up import up
from sparkops.models.smoke import build_everywhere
from sparkops.plan import api_url

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def local_cfg(vllm_venv, tmp_path_factory):
    work = tmp_path_factory.mktemp("local-node")
    port = free_port()
    sets = [f"cluster.venv={json.dumps(str(vllm_venv))}",
            f"cluster.paths.hf_home={json.dumps(str(work / 'hf'))}",
            f"cluster.paths.work_dir={json.dumps(str(work / 'work'))}",
            f"cluster.paths.lock={json.dumps(str(work / 'sparkops.lock'))}",  # not the machine's
            f"cluster.paths.cache_dir={json.dumps(str(work / 'cache'))}",
            f"cluster.ports.api={port}"]

    def make(profile="smoke", extra=()):
        return load_config(profile, "local", sets=sets + list(extra), environ={})
    make.sets = sets  # for `inv` subprocesses
    build_everywhere(make(), Silent())
    yield make
    down(make(), progress=Silent())


def stream_chat(url: str) -> list[dict]:
    events = []
    with requests.post(f"{url}/v1/chat/completions", stream=True, timeout=60, json={
            "model": "smoke", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                events.append(json.loads(line[6:]))
    return events


def test_up_serves_then_second_up_is_a_no_op_then_down_stops(local_cfg):
    cfg = local_cfg()
    said = []

    class Heard(Silent):
        def say(self, text):
            said.append(text)
    first = up(cfg, progress=Heard())
    assert not first.already
    # Where the start spent its time, read from the CPU vLLM's own log on this machine.
    startup = [s for s in said if " start-up " in s]
    assert len(startup) == 1 and startup[0].startswith("vLLM "), said
    assert "engine process" in startup[0] and "API up" in startup[0], startup
    events = stream_chat(first.url)
    assert events[-1]["usage"]["completion_tokens"] == 8

    data = collect(cfg)
    assert data["api"]["ready"] and data["deployment"]["profile"] == "smoke"
    assert data["nodes"][0]["services"]["vllm"]["running"]

    pidfile = Path(cfg.cluster["paths"]["work_dir"]) / "run" / "vllm.pid"
    serving = pidfile.read_text()
    again = up(cfg, progress=Silent())
    assert again.already and pidfile.read_text() == serving  # nothing restarted

    other = local_cfg(extra=["serving.max_model_len=256"])
    with pytest.raises(SparkopsError, match="already serving"):
        up(other, progress=Silent())

    assert down(cfg, progress=Silent()) == []
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{first.url}/health", timeout=2)
    assert not collect(cfg)["nodes"][0]["services"]["vllm"]["running"]


def test_failed_start_cleans_up_and_shows_the_log(local_cfg):
    # A flag vLLM knows with a value it refuses: past the flag check, vLLM itself fails at start.
    cfg = local_cfg(extra=['serving.extra_args=["--max-num-seqs", "many"]', "serving.ready_timeout_s=60"])
    with pytest.raises(SparkopsError) as err:
        up(cfg, progress=Silent())
    text = err.value.render()
    assert "local" in text and "vllm" in text
    assert "many" in text  # the tail of vLLM's own log: its argparse error
    assert not collect(cfg)["nodes"][0]["services"]["vllm"]["running"]


def test_a_flag_this_vllm_does_not_know_is_refused_before_anything_starts(local_cfg):
    cfg = local_cfg(extra=['serving.extra_args=["--max-num-seq", "4"]'])
    with pytest.raises(SparkopsError) as err:
        up(cfg, progress=Silent())
    text = err.value.render()
    assert err.value.step == "preflight" and "nothing was started" in text
    assert "this vLLM has no flag --max-num-seq; the closest it has is --max-num-seqs" in text, text
    assert not collect(cfg)["nodes"][0]["services"]["vllm"]["running"]


def test_taken_port_is_refused_before_anything_starts(local_cfg):
    import socket
    cfg = local_cfg()
    port = cfg.cluster["ports"]["api"]
    with socket.socket() as hog:
        hog.bind(("0.0.0.0", port))
        hog.listen()
        with pytest.raises(SparkopsError) as err:
            up(cfg, progress=Silent())
    assert f"port {port} is already in use" in err.value.render()
    assert "preflight" in err.value.render()


def _inv(args: list[str], sets: list[str]) -> subprocess.Popen:
    argv = [sys.executable, "-m", "invoke", *args]
    for s in sets:
        argv += ["--set", s]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_ups_at_once_one_serves_the_other_names_it_and_a_killed_up_frees_the_lock(local_cfg):
    """Two `inv up` half a second apart (as from two terminals): the second is refused at once,
    naming the first (verb, pid), and rolls nothing back, so the first serves afterwards. A
    `switch` killed with SIGKILL after starting vLLM, before recording it: the next `up` gets
    the lock at once, stops what was left and serves."""
    cfg = local_cfg()
    down(cfg, progress=Silent())
    sets = local_cfg.sets
    first = _inv(["up", "--profile", "smoke", "--cluster", "local"], sets)
    time.sleep(0.5)
    second = _inv(["up", "--profile", "smoke", "--cluster", "local"], sets)
    out2, _ = second.communicate(timeout=120)
    out1, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out1[-3000:]
    assert second.returncode == 1, out2[-3000:]
    assert "is busy" in out2 and "`inv up`" in out2 and f"pid {first.pid}" in out2, out2
    assert "Traceback" not in out2
    events = stream_chat(api_url(cfg))  # the first one still serves
    assert events[-1]["usage"]["completion_tokens"] == 8

    other = local_cfg(extra=["serving.max_model_len=256"])
    pidfile = Path(cfg.cluster["paths"]["work_dir"]) / "run" / "vllm.pid"
    old = pidfile.read_text()
    killed = _inv(["switch", "--profile", "smoke", "--cluster", "local", "--set", "serving.max_model_len=256"], sets)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not pidfile.is_file() or pidfile.read_text() in ("", old)):
        time.sleep(0.2)  # until it has stopped the old vLLM and started the new one, not yet recorded
    assert pidfile.is_file() and pidfile.read_text() != old
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    said = []

    class Say(Silent):
        def say(self, text: str) -> None:
            said.append(text)
    again = up(other, progress=Say())  # the lock is free at once; up stops what the dead one left
    assert not again.already and stream_chat(again.url)[-1]["usage"]["completion_tokens"] == 8
    assert any("left running" in s or "not whole" in s or "stopping" in s for s in said), said
    assert down(other, progress=Silent()) == []


def _session_members(sid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "sid=,pid=,stat="], capture_output=True, text=True).stdout
    rows = (line.split() for line in out.splitlines())
    return [int(p) for s, p, st in rows if int(s) == sid and not st.startswith("Z")]


def test_a_killed_api_server_is_degraded_then_up_brings_it_back_and_down_leaves_nothing(local_cfg):
    """vLLM's API server killed with SIGKILL (as the OOM killer does): its EngineCore lives on in
    the service's session. `status` says DEGRADED and names the leftovers; `up` of the same
    profile restarts it (saying why); `down` after a second kill stops every process of the
    session, not only its dead leader."""
    cfg = local_cfg()
    up(cfg, progress=Silent())
    pidfile = Path(cfg.cluster["paths"]["work_dir"]) / "run" / "vllm.pid"
    leader = int(pidfile.read_text())
    assert len(_session_members(leader)) > 1  # the API server and its engine
    os.kill(leader, signal.SIGKILL)
    time.sleep(2)
    data = collect(cfg)
    health = data["health"]
    assert health["verdict"] == "DEGRADED", health
    assert any("vllm" in p and "local" in p for p in health["problems"]), health
    said = []

    class Say(Silent):
        def say(self, text: str) -> None:
            said.append(text)
    again = up(cfg, progress=Say())
    assert not again.already and any("not whole" in s for s in said), said
    assert stream_chat(again.url)[-1]["usage"]["completion_tokens"] == 8
    assert collect(cfg)["health"]["verdict"] == "READY"

    leader = int(pidfile.read_text())
    os.kill(leader, signal.SIGKILL)
    time.sleep(2)
    left = _session_members(leader)
    assert down(cfg, progress=Silent()) == []
    assert not any(_session_members(leader)), f"left after down: {left}"


def _watch(cfg, local_cfg, tmp_path, *, ticks: int, restart: bool, probe_timeout: float = 10) -> list[dict]:
    import io

    from sparkops.deploy.watch import watch
    buf = io.StringIO()
    watch(cfg, interval=1, restart=restart, as_json=True, stall_s=60, probe_timeout=probe_timeout,
          incidents=tmp_path / "incidents", load=lambda profile: local_cfg(profile), out=buf, ticks=ticks)
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_watch_notices_a_dead_vllm_keeps_the_evidence_and_restart_serves_again(local_cfg, tmp_path):
    cfg = local_cfg()
    up(cfg, progress=Silent())
    assert [e["state"] for e in _watch(cfg, local_cfg, tmp_path, ticks=1, restart=True)] == ["ok"]
    os.kill(int((Path(cfg.cluster["paths"]["work_dir"]) / "run" / "vllm.pid").read_text()), signal.SIGKILL)
    events = _watch(cfg, local_cfg, tmp_path, ticks=2, restart=True)
    kinds = [e["event"] for e in events]
    assert kinds[:4] == ["sample", "incident", "restart", "restarted"], events
    assert events[0]["state"] == "failed" and any("vllm" in r for r in events[0]["reasons"])
    assert events[-1]["event"] == "sample" and events[-1]["state"] == "ok", events  # the next look: whole
    incident = json.loads(Path(events[1]["file"]).read_text())
    assert incident["verdict"] == "failed" and incident["logs"]["local"]["vllm"], incident.keys()
    assert oct(Path(events[1]["file"]).stat().st_mode & 0o777) == "0o600"
    assert stream_chat(api_url(cfg))[-1]["usage"]["completion_tokens"] == 8


def test_watch_tells_a_hung_engine_by_its_completion_not_by_health(local_cfg, tmp_path):
    """The engine stopped (SIGSTOP), as a deadlock looks from outside: /health stays 200 and the
    model stays listed; the 1-token completion times out, and watch says so."""
    cfg = local_cfg()
    up(cfg, progress=Silent())
    leader = int((Path(cfg.cluster["paths"]["work_dir"]) / "run" / "vllm.pid").read_text())
    engine = [p for p in _session_members(leader) if p != leader
              and "EngineCor" in Path(f"/proc/{p}/comm").read_text()]  # comm: 15 chars
    assert engine, _session_members(leader)
    for pid in engine:
        os.kill(pid, signal.SIGSTOP)
    try:
        assert requests.get(f"{api_url(cfg)}/health", timeout=10).status_code == 200
        events = _watch(cfg, local_cfg, tmp_path, ticks=1, restart=False, probe_timeout=5)
        event = events[0]
        assert event["state"] == "failed" and event["api"]["stage"] == "completion", event
        assert [e["event"] for e in events] == ["sample", "incident"]
        assert any("1-token request" in r for r in event["reasons"]), event
    finally:
        for pid in engine:
            os.kill(pid, signal.SIGCONT)
    down(cfg, progress=Silent())

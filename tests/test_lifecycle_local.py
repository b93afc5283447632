"""`up`/`status`/`down` on the `local` cluster with real vLLM (CPU build) and the smoke model:
the README's first quick-start path, end to end."""
from __future__ import annotations

import json
import time

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

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def local_cfg(vllm_venv, tmp_path_factory):
    work = tmp_path_factory.mktemp("local-node")
    port = free_port()
    sets = [f"cluster.venv={json.dumps(str(vllm_venv))}",
            f"cluster.paths.hf_home={json.dumps(str(work / 'hf'))}",
            f"cluster.paths.work_dir={json.dumps(str(work / 'work'))}",
            f"cluster.paths.cache_dir={json.dumps(str(work / 'cache'))}",
            f"cluster.ports.api={port}"]

    def make(profile="smoke", extra=()):
        return load_config(profile, "local", sets=sets + list(extra), environ={})
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
    first = up(cfg, progress=Silent())
    assert not first.already
    events = stream_chat(first.url)
    assert events[-1]["usage"]["completion_tokens"] == 8

    data = collect(cfg)
    assert data["api"]["ready"] and data["deployment"]["profile"] == "smoke"
    assert data["nodes"][0]["services"]["vllm"]["running"]

    started = time.monotonic()
    again = up(cfg, progress=Silent())
    assert again.already and time.monotonic() - started < 2.0

    other = local_cfg(extra=["serving.max_model_len=256"])
    with pytest.raises(SparkopsError, match="already serving"):
        up(other, progress=Silent())

    assert down(cfg, progress=Silent()) == []
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{first.url}/health", timeout=2)
    assert not collect(cfg)["nodes"][0]["services"]["vllm"]["running"]


def test_failed_start_cleans_up_and_shows_the_log(local_cfg):
    cfg = local_cfg(extra=['serving.extra_args=["--no-such-flag"]', "serving.ready_timeout_s=60"])
    with pytest.raises(SparkopsError) as err:
        up(cfg, progress=Silent())
    text = err.value.render()
    assert "local" in text and "vllm" in text
    assert "no-such-flag" in text  # the tail of vLLM's own log
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

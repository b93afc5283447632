"""Stopping what a test or benchmark started in a session of its own (start_new_session=True):
the whole process group, politely first (vLLM's engine and workers are its children)."""
from __future__ import annotations

import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM to proc's process group; SIGKILL when it outlives grace_s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

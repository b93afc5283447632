"""A fake `vllm` for sparkops' tests: `vllm serve MODEL [flags]` with vLLM's flags, log lines and
OpenAI-compatible API, and an engine whose speed follows a known model (vllm/perf.py). Standard
library only. Built into a virtualenv by tests/fake_vllm_fixtures.py (fixture `fake_vllm_venv`).

Modules use relative imports only: the same files are importable as `fake_vllm.vllm` from
tests/ (for perf.py's formulas) without shadowing a real vLLM."""
from __future__ import annotations


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("vllm")
    except Exception:  # noqa: BLE001 - imported from the source tree, not installed
        return "0.0.1+sparkops.fake"


__version__ = _version()

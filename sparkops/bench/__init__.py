"""Serving benchmark: a streaming OpenAI client, vLLM-compatible metrics, fixed prompt sets.

`run_benchmark(...) -> BenchRun` sends the requests; `summarize(run, slos) -> dict` turns the
records into the keys `vllm bench serve` writes (mean_ttft_ms, p99_itl_ms, ...) plus ours.
"""

from sparkops.bench.metrics import single_request_summary, summarize
from sparkops.bench.prompts import Prompt, load_default_prompts, load_jsonl, load_sharegpt
from sparkops.bench.records import BenchRun, RequestRecord


def run_benchmark(*args, **kwargs) -> BenchRun:
    """See sparkops.bench.client.arun_benchmark; imported lazily because it needs aiohttp."""
    from sparkops.bench.client import run_benchmark as _run

    return _run(*args, **kwargs)


__all__ = [
    "BenchRun", "Prompt", "RequestRecord", "load_default_prompts", "load_jsonl",
    "load_sharegpt", "run_benchmark", "single_request_summary", "summarize",
]

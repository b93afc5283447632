"""Serving benchmark: a streaming OpenAI client, vLLM-compatible metrics, fixed prompt sets.

`run_benchmark(...) -> BenchRun` sends the requests; `summarize(run, slos) -> dict` turns the
records into the keys `vllm bench serve` writes (mean_ttft_ms, p99_itl_ms, ...) plus ours.
"""

from sparkops.bench.load.prompts import Prompt, load_default_prompts, load_jsonl, load_sharegpt
from sparkops.bench.load.records import BenchRun, RequestRecord
from sparkops.bench.measure.metrics import single_request_summary, summarize


def run_benchmark(*args, **kwargs) -> BenchRun:
    """See sparkops.bench.load.client.arun_benchmark; imported lazily because it needs aiohttp."""
    from sparkops.bench.load.client import run_benchmark as _run

    return _run(*args, **kwargs)


__all__ = [
    "BenchRun", "Prompt", "RequestRecord", "load_default_prompts", "load_jsonl",
    "load_sharegpt", "run_benchmark", "single_request_summary", "summarize",
]

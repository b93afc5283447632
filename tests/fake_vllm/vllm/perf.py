"""The fake vLLM's performance and memory model: every constant and formula in one place, pure,
so that tests compute what the server must measure instead of hard-coding numbers.

Engine (tests/fake_vllm/vllm/server.py runs exactly this):

* At most `max_num_seqs` requests run (decode) at once; the others wait in a FIFO queue.
* The engine works in steps. A step with `b` running requests emits one token to each of them
  and takes

      step_s(b) = BASE_STEP_S * (1 + BATCH_COST * b) * kv_factor * eager_factor

  with BASE_STEP_S = 2 ms, BATCH_COST (k) = 0.25, kv_factor = 0.8 with an fp8 KV cache
  (`--kv-cache-dtype fp8`, `fp8_e4m3`, `fp8_e5m2`; 1.0 otherwise) and eager_factor = 2.0 with
  `--enforce-eager` (1.0 otherwise).
* A request joins at a step boundary; the step it joins also pays its prefill,
  prompt_tokens / PREFILL_TOK_S (50,000 tokens/s), and already emits its first token. So a
  request of n output tokens is in n steps. An idle engine starts a step as soon as a request
  arrives.
* Tokens are whitespace-separated words (prompts and output alike), as in
  sparkops.testing.synthetic_server.
* Times are scaled by SPARKOPS_FAKE_VLLM_TIME_SCALE (environment of the server, default 1):
  every step and prefill time above is multiplied by it. The functions take `time_scale`.

So with `c` streams each keeping one request in flight (a closed loop, as a benchmark client
at concurrency c) and `m = max_num_seqs`, the batch is b = min(c, m); in steady state the
inter-token latency is step_s(b) and the output rate b / step_s(b) tokens/s. With prefill
counted (P prompt tokens, n output tokens per request, b requests joining per n steps):

      output_tok_s = b * n / (n * step_s(b) + b * P / PREFILL_TOK_S)

(see output_tok_s). Client and HTTP overheads are not in the model: a measurement reads a
little below it.

Memory: the KV cache holds KV_CAPACITY_TOKENS tokens (65,536), twice that with an fp8 KV
cache; `--gpu-memory-utilization` does not change it but must be at most
MAX_GPU_MEMORY_UTILIZATION (0.95). An explicit `--max-num-seqs m` must fit m whole contexts:
m * max_model_len <= capacity, else start-up fails with a ValueError ("... not enough KV
cache ...") and exit 1. Without `--max-num-seqs` the server takes min(DEFAULT_MAX_NUM_SEQS,
capacity // max_model_len); one context longer than the whole cache fails as vLLM does.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

BASE_STEP_S = 0.002
BATCH_COST = 0.25  # k: each running request adds a quarter of the base step
FP8_KV_FACTOR = 0.8
EAGER_FACTOR = 2.0
PREFILL_TOK_S = 50_000.0
KV_CAPACITY_TOKENS = 65_536
FP8_CAPACITY_FACTOR = 2
MAX_GPU_MEMORY_UTILIZATION = 0.95
DEFAULT_MAX_NUM_SEQS = 256
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default
TIME_SCALE_ENV = "SPARKOPS_FAKE_VLLM_TIME_SCALE"


def is_fp8(kv_cache_dtype: str) -> bool:
    return kv_cache_dtype.startswith("fp8")


def step_s(batch: int, *, kv_cache_dtype: str = "auto", enforce_eager: bool = False,
           time_scale: float = 1.0) -> float:
    """Seconds one engine step takes with `batch` running requests (prefill not included)."""
    if batch < 1:
        raise ValueError(f"a step needs at least one request, not {batch}")
    kv = FP8_KV_FACTOR if is_fp8(kv_cache_dtype) else 1.0
    eager = EAGER_FACTOR if enforce_eager else 1.0
    return BASE_STEP_S * (1 + BATCH_COST * batch) * kv * eager * time_scale


def prefill_s(prompt_tokens: float, *, time_scale: float = 1.0) -> float:
    """What a request's prefill adds to the step it joins."""
    return prompt_tokens / PREFILL_TOK_S * time_scale


def kv_capacity_tokens(kv_cache_dtype: str = "auto") -> int:
    return KV_CAPACITY_TOKENS * (FP8_CAPACITY_FACTOR if is_fp8(kv_cache_dtype) else 1)


def default_max_num_seqs(max_model_len: int, kv_cache_dtype: str = "auto") -> int:
    """What the server runs with when `--max-num-seqs` is not given."""
    return max(1, min(DEFAULT_MAX_NUM_SEQS, kv_capacity_tokens(kv_cache_dtype) // max_model_len))


def memory_error(*, max_num_seqs: int | None, max_model_len: int, kv_cache_dtype: str = "auto",
                 gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION) -> str | None:
    """The ValueError text start-up fails with, or None when these settings fit."""
    if gpu_memory_utilization > MAX_GPU_MEMORY_UTILIZATION:
        return (f"ValueError: Free memory on device is less than desired GPU memory utilization "
                f"({gpu_memory_utilization}): not enough memory is left for activations above "
                f"{MAX_GPU_MEMORY_UTILIZATION}. Decrease GPU memory utilization.")
    capacity = kv_capacity_tokens(kv_cache_dtype)
    if max_model_len > capacity:
        return (f"ValueError: To serve at least one request with the model's max seq len ({max_model_len}), "
                f"there is not enough KV cache: it holds {capacity:,} tokens (kv_cache_dtype {kv_cache_dtype}). "
                f"Try decreasing `max_model_len` when initializing the engine.")
    if max_num_seqs is not None and max_num_seqs * max_model_len > capacity:
        return (f"ValueError: max_num_seqs ({max_num_seqs}) x max_model_len ({max_model_len}) = "
                f"{max_num_seqs * max_model_len:,} tokens, but there is not enough KV cache: it holds "
                f"{capacity:,} tokens (kv_cache_dtype {kv_cache_dtype}). Decrease `max_num_seqs` or "
                f"`max_model_len`, or use an fp8 KV cache.")
    return None


@dataclass(frozen=True)
class Settings:
    """The serving settings the model depends on (vLLM's flags of the same names)."""
    max_num_seqs: int | None = None
    max_model_len: int = 2048
    kv_cache_dtype: str = "auto"
    enforce_eager: bool = False
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION

    @property
    def seqs(self) -> int:
        """The max_num_seqs the server runs with."""
        return self.max_num_seqs or default_max_num_seqs(self.max_model_len, self.kv_cache_dtype)

    def error(self) -> str | None:
        return memory_error(max_num_seqs=self.max_num_seqs, max_model_len=self.max_model_len,
                            kv_cache_dtype=self.kv_cache_dtype, gpu_memory_utilization=self.gpu_memory_utilization)

    @property
    def feasible(self) -> bool:
        return self.error() is None


def batch(concurrency: int, s: Settings) -> int:
    return max(1, min(concurrency, s.seqs))


def itl_s(concurrency: int, s: Settings, *, time_scale: float = 1.0) -> float:
    """The steady inter-token latency at this concurrency (closed loop; prefill left out)."""
    return step_s(batch(concurrency, s), kv_cache_dtype=s.kv_cache_dtype, enforce_eager=s.enforce_eager,
                  time_scale=time_scale)


def output_tok_s(concurrency: int, s: Settings, *, max_tokens: int | None = None, prompt_tokens: float = 0,
                 time_scale: float = 1.0) -> float:
    """Steady output tokens/s of `concurrency` closed-loop streams. With max_tokens (n) and the
    mean prompt_tokens (P) of the requests, each request's prefill is counted: b * n /
    (n * step_s(b) + b * P / PREFILL_TOK_S); without max_tokens, b / step_s(b)."""
    b = batch(concurrency, s)
    step = itl_s(concurrency, s, time_scale=time_scale)
    if not max_tokens:
        return b / step
    return b * max_tokens / (max_tokens * step + b * prefill_s(prompt_tokens, time_scale=time_scale))


def best(candidates: Iterable[Settings], concurrency: int, *, itl_slo_s: float | None = None,
         time_scale: float = 1.0) -> Settings | None:
    """The feasible candidate with the highest steady output rate whose ITL meets the SLO (ties:
    the first given), or None when none does."""
    ok = [s for s in candidates if s.feasible
          and (itl_slo_s is None or itl_s(concurrency, s, time_scale=time_scale) <= itl_slo_s)]
    return max(ok, key=lambda s: output_tok_s(concurrency, s, time_scale=time_scale), default=None)

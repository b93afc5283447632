"""Async streaming OpenAI client that records what vLLM's benchmark client records.

Timing follows vllm/benchmarks/lib/endpoint_request_func.py (`async_request_openai_chat_
completions`, `async_request_openai_completions`) and serve.py (`benchmark`, `get_request`):
the clock starts right before the POST, after the concurrency semaphore; every SSE event with
non-empty `choices` is timestamped. We stamp an event when its bytes come off the socket
(before any parsing), so parse cost never shows up as latency.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

from sparkops.bench.load.http import Pool
from sparkops.bench.load.prompts import Prompt, warmup_prompt
from sparkops.bench.load.records import BenchRun, RequestRecord

ENDPOINTS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
ERROR_BODY_CHARS = 300
TEXT_KEYS = ("content", "reasoning_content", "reasoning", "tool_calls")

Progress = Callable[[int, int, RequestRecord], None]


class StallWatch:
    """How long the client itself was kept from running during a run.

    While the event loop is held up (another process hogging the CPU, a slow callback),
    requests go out late, and where chunks are stamped by the loop rather than the kernel they
    wait in the socket and are stamped late, together. On a box where vLLM's spin-waiting
    threads share the cores with the client this happened one run in three (TTFT x10, TPOT
    near 0). A 10 ms tick measures the loop's worst delay; the kernel's schedstat (Linux) says
    how much of the run it spent runnable but without a CPU.
    """

    TICK_S = 0.01

    def __init__(self):
        self.max_stall_s, self._handle = 0.0, None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wait0 = _cpu_wait_s()
        self._due = self._loop.time() + self.TICK_S
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        late = self._loop.time() - self._due
        self.max_stall_s = max(self.max_stall_s, late)
        self._due = self._loop.time() + self.TICK_S
        self._handle = self._loop.call_at(self._due, self._tick)

    def stop(self) -> dict:
        if self._handle is not None:
            self._handle.cancel()
        wait1 = _cpu_wait_s()
        cpu_wait = None if wait1 is None or self._wait0 is None else wait1 - self._wait0
        return {"max_stall_ms": round(self.max_stall_s * 1000, 3),
                "cpu_wait_ms": None if cpu_wait is None else round(cpu_wait * 1000, 3)}


def _cpu_wait_s() -> float | None:
    """Seconds this thread has spent runnable but not running (Linux schedstat), or None."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


class BenchmarkError(RuntimeError):
    """The run could not start (e.g. the warm-up request failed)."""


def arrival_offsets(n: int, request_rate: float, burstiness: float, seed: int) -> list[float]:
    """Dispatch times (s after t0) as serve.py `get_request` computes them.

    Gamma-distributed gaps with shape=burstiness, scale=1/(rate*burstiness) (burstiness 1 is
    Poisson), rescaled so the last dispatch lands at n/rate. vLLM draws from numpy's global
    RNG; we draw from random.Random(seed): same distribution, different stream.
    """
    if burstiness <= 0:
        raise ValueError(f"burstiness must be positive, got {burstiness}")
    if request_rate <= 0:
        raise ValueError(f"request_rate must be positive, got {request_rate}")
    if request_rate == math.inf:
        return [0.0] * n
    rng = random.Random(seed)
    if burstiness == math.inf:
        gaps = [1.0 / request_rate] * n
    else:
        theta = 1.0 / (request_rate * burstiness)
        gaps = [rng.gammavariate(burstiness, theta) for _ in range(n)]
    offsets, total = [], 0.0
    for g in gaps:
        total += g
        offsets.append(total)
    if offsets and offsets[-1] > 0:
        scale = (n / request_rate) / offsets[-1]
        offsets = [o * scale for o in offsets]
    return offsets


def build_payload(
    prompt: Prompt, model: str, endpoint: str, temperature: float, ignore_eos: bool
) -> bytes:
    body: dict[str, object] = {"model": model}
    if endpoint == "chat":
        context = [{"role": "system", "content": prompt.context}] if prompt.context else []
        body["messages"] = [*context, {"role": "user", "content": prompt.text}]
    else:
        body["prompt"] = prompt.context + prompt.text
    body |= {
        "max_tokens": prompt.max_tokens,
        "temperature": temperature,  # explicit: server defaults differ per model (pitfall 6)
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if ignore_eos:
        body["ignore_eos"] = True
    return json.dumps(body).encode()


def _has_text(choice: dict, endpoint: str) -> bool:
    if endpoint == "completions":
        return bool(choice.get("text"))
    delta = choice.get("delta") or {}
    return any(delta.get(k) for k in TEXT_KEYS)


def _error_text(obj: dict) -> str:
    err = obj.get("error", obj)
    if isinstance(err, dict):
        inner = err.get("error")
        err = inner if isinstance(inner, dict) else err
        return str(err.get("message") or err)[:ERROR_BODY_CHARS]
    return str(err)[:ERROR_BODY_CHARS]


async def request_once(
    pool: Pool,
    request: bytes,
    rec: RequestRecord,
    endpoint: str,
    timeout_s: float,
    t0: float,
) -> None:
    """Send one prepared streaming request and fill `rec`. Never raises: failures go to
    rec.error as "<kind>: <detail>"."""
    st = time.perf_counter()
    rec.start_s = st - t0
    reader = _EventReader(rec, st, endpoint)
    try:
        res = await pool.post(request, timeout_s, reader.feed)
    except asyncio.TimeoutError:
        rec.error = f"timeout: no complete response within {timeout_s:g} s"
        return
    except OSError as e:
        rec.error = f"connection error: {type(e).__name__}: {e}"
        return
    rec.http_status = res.status
    if res.status is not None and res.status != 200:
        rec.error = f"HTTP {res.status}: {res.body.decode('utf-8', 'replace').strip()[:ERROR_BODY_CHARS]}"
    elif reader.error:
        rec.error = reader.error
    elif res.error:
        rec.error = f"{res.error} after {len(rec.events_s)} events"
    elif not rec.events_s:
        rec.error = "empty stream: no event with choices"
    elif not reader.done:
        rec.error = f"truncated stream: ended before [DONE] after {len(rec.events_s)} events"
    else:
        rec.success = True


class _EventReader:
    """Turns raw `data:` payloads into the record's events, usage and errors, as they come."""

    def __init__(self, rec: RequestRecord, st: float, endpoint: str):
        self.rec, self.st, self.endpoint = rec, st, endpoint
        self.done, self.error = False, ""

    def feed(self, events: list[tuple[float, bytes]]) -> None:
        rec = self.rec
        for t, payload in events:
            if self.error:
                return
            if payload == b"[DONE]":
                self.done = True
                continue
            try:
                obj = json.loads(payload)
                if choices := obj.get("choices"):
                    rec.events_s.append(t - self.st)
                    has = _has_text(choices[0], self.endpoint)
                    rec.text_events.append(has)
                    if has:
                        rec.output_chars += _text_len(choices[0], self.endpoint)
                elif "error" in obj or obj.get("object") == "error":
                    self.error = f"error event: {_error_text(obj)} after {len(rec.events_s)} events"
                if usage := obj.get("usage"):
                    rec.completion_tokens = usage.get("completion_tokens")
                    rec.prompt_tokens = usage.get("prompt_tokens")
                if rec.response_id is None:
                    rec.response_id = obj.get("id")
            except (ValueError, AttributeError, TypeError, KeyError, IndexError) as e:
                self.error = f"bad response: {type(e).__name__}: {e}"


def _text_len(choice: dict, endpoint: str) -> int:
    if endpoint == "completions":
        return len(choice.get("text") or "")
    delta = choice.get("delta") or {}
    return sum(len(v) for k in TEXT_KEYS[:3] if isinstance(v := delta.get(k), str))


class Client:
    """One connection pool to one server, for several runs (a sweep's warm-ups and repetitions
    reuse the same warm connections). Use as `async with Client(...) as c:`."""

    def __init__(self, base_url: str, model: str, *, endpoint: str = "chat", temperature: float = 0.0,
                 ignore_eos: bool = False, api_key: str | None = None, timeout_s: float = 600.0):
        if endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {sorted(ENDPOINTS)}, got {endpoint!r}")
        self.base_url, self.model, self.endpoint = base_url, model, endpoint
        self.temperature, self.ignore_eos, self.api_key, self.timeout_s = temperature, ignore_eos, api_key, timeout_s
        self.url = base_url.rstrip("/") + ENDPOINTS[endpoint]
        self.headers = {"Content-Type": "application/json"}  # Host/Length added by Pool
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.pool = Pool(base_url)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc) -> None:
        self.pool.close()

    def _request(self, prompt: Prompt, ignore_eos: bool) -> bytes:
        body = build_payload(prompt, self.model, self.endpoint, self.temperature, ignore_eos)
        return self.pool.request_bytes(ENDPOINTS[self.endpoint], body, self.headers)

    async def warm_up(self, prompt: Prompt | None = None) -> RequestRecord:
        """One request outside any measurement; BenchmarkError when it fails."""
        w = prompt or warmup_prompt()
        rec = RequestRecord(index=-1, prompt_id=w.id, max_tokens=w.max_tokens)
        await request_once(self.pool, self._request(w, self.ignore_eos and prompt is not None), rec,
                           self.endpoint, self.timeout_s, time.perf_counter())
        if not rec.success:
            raise BenchmarkError(f"warm-up request to {self.url} failed: {_scrub(rec.error, self.api_key)}")
        return rec

    async def prewarm(self, n: int) -> None:
        # Unlike vLLM (whose aiohttp pool connects inside the measured requests), open the
        # connections a run will use beforehand: handshakes are not server latency.
        await self.pool.prewarm(n)

    async def run(self, prompts: Sequence[Prompt], *, concurrency: int | None = None,
                  request_rate: float = math.inf, burstiness: float = 1.0, seed: int = 0,
                  progress: Progress | None = None, warm_rec: RequestRecord | None = None) -> BenchRun:
        """Send `prompts` (all dispatched at once with request_rate inf, at most `concurrency`
        in flight) and record every request."""
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if not prompts:
            raise ValueError("no prompts to send")
        offsets = arrival_offsets(len(prompts), request_rate, burstiness, seed)
        reqs = [self._request(p, self.ignore_eos) for p in prompts]
        settings = {
            "base_url": self.base_url, "model": self.model, "endpoint": self.endpoint,
            "num_prompts": len(prompts), "max_concurrency": concurrency, "request_rate": request_rate,
            "burstiness": burstiness, "temperature": self.temperature, "ignore_eos": self.ignore_eos,
            "timeout_s": self.timeout_s, "warmup": warm_rec is not None, "seed": seed,
            "api_key_set": bool(self.api_key),
        }
        records = [RequestRecord(index=i, prompt_id=p.id, max_tokens=p.max_tokens)
                   for i, p in enumerate(prompts)]
        sem = asyncio.Semaphore(concurrency) if concurrency else None
        finished = 0
        endpoint, timeout_s, pool = self.endpoint, self.timeout_s, self.pool

        async def one(rec: RequestRecord, req: bytes) -> None:
            nonlocal finished
            if sem is None:
                await request_once(pool, req, rec, endpoint, timeout_s, t0)
            else:
                async with sem:
                    await request_once(pool, req, rec, endpoint, timeout_s, t0)
            rec.error = _scrub(rec.error, self.api_key)
            finished += 1
            if progress is not None:
                progress(finished, len(records), rec)

        # A GC pass in the middle of a stream shows up as a latency spike; vLLM freezes too.
        gc.collect()
        gc.freeze()
        try:
            started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
            watch = StallWatch()
            watch.start()
            t0 = time.perf_counter()
            tasks = []
            for rec, req, offset in zip(records, reqs, offsets):
                delay = t0 + offset - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                rec.dispatched_s = time.perf_counter() - t0
                tasks.append(asyncio.create_task(one(rec, req)))
            await asyncio.gather(*tasks)
            duration = time.perf_counter() - t0
            client = watch.stop()
        finally:
            gc.unfreeze()
        # Kernel receive times (the norm on Linux over http) are immune to the client's own
        # delays; event-loop stamps are not, which is when StallWatch's warning matters most.
        client["timestamps"] = self.pool.stamp_source()
        return BenchRun(settings=settings, records=records, duration_s=duration, t0_perf=t0,
                        started_at=started_at, warmup=warm_rec, client=client)


async def arun_benchmark(
    base_url: str,
    model: str,
    prompts: Sequence[Prompt],
    *,
    concurrency: int | None = None,
    request_rate: float = math.inf,
    burstiness: float = 1.0,
    temperature: float = 0.0,
    endpoint: str = "chat",
    api_key: str | None = None,
    timeout_s: float = 600.0,
    warmup: bool = True,
    ignore_eos: bool = False,
    seed: int = 0,
    progress: Progress | None = None,
) -> BenchRun:
    """One run: a warm-up request (not measured), then `prompts`."""
    if concurrency is not None and concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if not prompts:
        raise ValueError("no prompts to send")
    async with Client(base_url, model, endpoint=endpoint, temperature=temperature, ignore_eos=ignore_eos,
                      api_key=api_key, timeout_s=timeout_s) as client:
        warm_rec = None
        if warmup:
            warm_rec = await client.warm_up()
            await client.prewarm(min(concurrency or len(prompts), len(prompts)))
        return await client.run(prompts, concurrency=concurrency, request_rate=request_rate,
                                burstiness=burstiness, seed=seed, progress=progress, warm_rec=warm_rec)


def run_benchmark(base_url: str, model: str, prompts: Sequence[Prompt], **kwargs) -> BenchRun:
    """Blocking wrapper around `arun_benchmark` (same keyword arguments)."""
    return asyncio.run(arun_benchmark(base_url, model, prompts, **kwargs))


def _scrub(message: str, api_key: str | None) -> str:
    # A server may echo request headers in an error body; the key must not reach results.
    return message.replace(api_key, "***") if api_key and message else message

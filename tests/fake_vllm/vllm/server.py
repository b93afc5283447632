"""The fake vLLM's start-up, engine and OpenAI-compatible API (standard library asyncio).

Start-up logs the lines sparkops reads from a real vLLM's log (the banner with the version, the
resolved architecture, the engine's config, the KV cache, "Application startup complete"), in
vLLM's format: `(APIServer pid=N) INFO MM-DD HH:MM:SS [file.py:line] message`. The model must be
in the Hugging Face cache (HF_HOME/hub, or a folder path) with its config.json: weights are never
read. Then the memory model of perf.py decides whether the settings fit; if not, the engine's
ValueError is logged as vLLM logs it and the process exits 1 (FAIL_AFTER_S after launch).

Routes: GET /health, /ping, /version, /metrics, /v1/models; POST /tokenize, /detokenize,
/v1/completions, /v1/chat/completions (streamed as server-sent events, with usage in the last
chunk when stream_options.include_usage is set, then `data: [DONE]`). As in vLLM, only /v1/...
routes need the API key (`--api-key`, else the environment's VLLM_API_KEY): a request without
`Authorization: Bearer KEY` gets 401 {"error": "Unauthorized"}.

Tokens are whitespace-separated words (prompt tokens: the words of every message content, or of
the prompt; no chat-template tokens). /tokenize gives each word a small integer id from a
vocabulary the server grows as it sees words, and /detokenize joins ids' words with spaces.
Output words are drawn from a fixed list by a random generator seeded with `--seed` (or the
request's seed) and the prompt, so the same request gets the same text. Without ignore_eos a
request stops ("stop") after a number of tokens drawn from the same generator in
[EOS_MIN_TOKENS, EOS_MAX_TOKENS), so any max_tokens under EOS_MIN_TOKENS is always honoured in
full; with ignore_eos it always runs to max_tokens ("length"). A missing max_tokens means the
rest of the context, and a prompt with max_tokens over max_model_len is refused with vLLM's
HTTP 400.

The engine is perf.py's model: one asyncio task runs steps on an absolute schedule (each step
ends step_s(b) + the joiners' prefill after the previous one ended), so the loop's wake-up
jitter does not accumulate (and the last SLEEP_SLACK_S of each wait is a blocking sleep, so a
step ends within ~0.1 ms of when it is due); a step that starts more than
MAX_LAG_S late (the machine stalled) restarts the schedule from now instead of catching up.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

from . import __version__, perf

PID = os.getpid()
MAX_LAG_S = 0.05
# A start that cannot fit its KV cache fails this long after launch, as vLLM's does (after loading
# the weights and profiling memory): `up` sees it while waiting for the API, as with vLLM, not
# as a process that exited at once. A start that fits is up in a fraction of a second.
FAIL_AFTER_S = 1.5
# The event loop's timers wake up to a millisecond late (epoll's resolution): the engine sleeps on
# the loop until this long before a step is due, then the rest in a blocking sleep.
SLEEP_SLACK_S = 0.0015
STATS_INTERVAL_S = 10.0
EOS_MIN_TOKENS, EOS_MAX_TOKENS = 64, 1024
WORDS = tuple("the of and to in is was for on that with as by at from it an be this are or his had not but which "
              "one all were we when there can been has more if no out so said what up its about into than them "
              "only other new some could time these two may then do first any my now such like our over man me "
              "even most made after also did many before must through back years where much your way well down "
              "should because each just those people how too little state good very make world still own see "
              "men work long get here between both life being under never day same another know while last "
              "might us great old year off come since against go came right used take three".split())


def log(level: str, where: str, message: str, proc: str = "APIServer") -> None:
    print(f"({proc} pid={PID}) {level} {time.strftime('%m-%d %H:%M:%S')} [{where}] {message}", flush=True)


def uvicorn(message: str) -> None:
    print(f"INFO:     {message}", flush=True)


# --- the model on disk -------------------------------------------------------------------------

def find_model(tag: str, revision: str | None) -> Path | None:
    """The folder holding the model's config.json: `tag` itself, or its snapshot in the HF cache."""
    direct = Path(tag).expanduser()
    if (direct / "config.json").is_file():
        return direct
    hf_home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    repo = Path(os.environ.get("HF_HUB_CACHE") or hf_home / "hub") / ("models--" + tag.replace("/", "--"))
    snaps = repo / "snapshots"

    def ref(name: str) -> str:
        f = repo / "refs" / name
        return f.read_text().strip() if f.is_file() else name

    candidates = [snaps / ref(revision)] if revision else [snaps / ref("main"), *sorted(snaps.glob("*"))]
    return next((c for c in candidates if (c / "config.json").is_file()), None)


def kv_bytes_per_token(config: dict, kv_cache_dtype: str) -> int:
    layers = int(config.get("num_hidden_layers") or 2)
    heads = int(config.get("num_key_value_heads") or config.get("num_attention_heads") or 2)
    head_dim = int(config.get("head_dim") or (config.get("hidden_size") or 64) // (config.get("num_attention_heads")
                                                                                  or 1))
    return 2 * layers * heads * head_dim * (1 if perf.is_fp8(kv_cache_dtype) else 2)


# --- tokens ------------------------------------------------------------------------------------

def contents(body: dict) -> list[str]:
    """The texts whose words are a request's prompt tokens."""
    messages = body.get("messages")
    if not messages:
        p = body.get("prompt", "")
        return [p] if isinstance(p, str) else [x for x in p if isinstance(x, str)]
    out = []
    for m in messages:
        c = m.get("content")
        if isinstance(c, list):
            out += [str(part.get("text", "")) for part in c if isinstance(part, dict)]
        elif c is not None:
            out.append(str(c))
    return out


def prompt_tokens(body: dict) -> int:
    p = body.get("prompt")
    if not body.get("messages") and isinstance(p, list) and p and all(isinstance(x, int) for x in p):
        return len(p)
    return sum(len(t.split()) for t in contents(body))


def length_error(max_model_len: int, n_prompt: int, max_tokens: int | None) -> str | None:
    """vLLM's message for a request that does not fit the context, or None."""
    m = max_model_len
    if n_prompt >= m:
        return (f"This model's maximum context length is {m} tokens. However, your request has "
                f"{n_prompt} input tokens. Please reduce the length of the input messages.")
    if max_tokens is not None and n_prompt + max_tokens > m:
        return (f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's "
                f"maximum context length is {m} tokens and your request has {n_prompt} input tokens "
                f"({max_tokens} > {m} - {n_prompt}).")
    return None


class Vocabulary:
    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.words: list[str] = []
        for w in ("<unk>", "<s>", "</s>", *WORDS):
            self.id(w)

    def id(self, word: str) -> int:
        if word not in self.ids:
            self.ids[word] = len(self.words)
            self.words.append(word)
        return self.ids[word]

    def word(self, tid: object) -> str:
        if not isinstance(tid, int) or isinstance(tid, bool) or not 0 <= tid < len(self.words):
            raise ValueError(f"token id {tid!r} is not in the vocabulary")
        return self.words[tid]


# --- the engine --------------------------------------------------------------------------------

def _event(obj: object) -> bytes:
    data = b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


@dataclass(eq=False)
class Seq:
    rid: str
    model: str
    chat: bool
    stream: bool
    usage: bool
    prompt_tokens: int
    n: int  # tokens it will emit
    finish_reason: str
    rng: random.Random
    writer: asyncio.StreamWriter
    done: asyncio.Future
    created: int = field(default_factory=lambda: int(time.time()))
    k: int = 0
    text: list[str] = field(default_factory=list)

    def closed(self) -> bool:
        return self.writer.transport is None or self.writer.transport.is_closing()

    def chunk(self, text: str | None, finish: str | None) -> dict:
        if self.chat:
            delta = {"role": "assistant", "content": ""} if text is None else {"content": text}
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            kind = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish, "stop_reason": None}
            kind = "text_completion"
        return {"id": self.rid, "object": kind, "created": self.created, "model": self.model, "choices": [choice]}

    def usage_obj(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.k,
                "total_tokens": self.prompt_tokens + self.k}

    def emit(self) -> bool:
        """One token (the step's); True when this was the last."""
        self.k += 1
        word = self.rng.choice(WORDS)
        text = word if self.k == 1 else " " + word
        last = self.k >= self.n
        if not self.stream:
            self.text.append(text)
        else:
            out = b""
            if self.k == 1 and self.chat:
                out += _event(self.chunk(None, None))
            out += _event(self.chunk(text, self.finish_reason if last else None))
            if last:
                if self.usage:
                    out += _event(self.chunk(None, None) | {"choices": [], "usage": self.usage_obj()})
                out += _event(b"[DONE]") + b"0\r\n\r\n"
            self.writer.write(out)
        return last


class Engine:
    def __init__(self, settings: perf.Settings, time_scale: float, model_name: str, capacity: int):
        self.s, self.time_scale, self.model_name, self.capacity = settings, time_scale, model_name, capacity
        self.max_num_seqs = settings.seqs
        self.waiting: deque[Seq] = deque()
        self.running: list[Seq] = []
        self.wake = asyncio.Event()
        self.generation_tokens = self.prompt_tokens = self.steps = 0
        self.finished: dict[str, int] = {"length": 0, "stop": 0, "abort": 0}

    def add(self, seq: Seq) -> None:
        self.waiting.append(seq)
        self.wake.set()

    def _finish(self, seq: Seq, reason: str) -> None:
        self.finished[reason] = self.finished.get(reason, 0) + 1
        if not seq.done.done():
            seq.done.set_result(reason)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        due: float | None = None  # when the last step ended, on the schedule
        while True:
            if not self.running and not self.waiting:
                self.wake.clear()
                await self.wake.wait()
                due = None
            joined = 0
            while self.waiting and len(self.running) < self.max_num_seqs:
                seq = self.waiting.popleft()
                if seq.closed():
                    self._finish(seq, "abort")
                    continue
                self.running.append(seq)
                self.prompt_tokens += seq.prompt_tokens
                joined += seq.prompt_tokens
            if not self.running:
                continue
            took = perf.step_s(len(self.running), kv_cache_dtype=self.s.kv_cache_dtype,
                               enforce_eager=self.s.enforce_eager, time_scale=self.time_scale)
            took += perf.prefill_s(joined, time_scale=self.time_scale)
            now = loop.time()
            start = now if due is None or now - due > MAX_LAG_S else due
            due = start + took
            if due - now > SLEEP_SLACK_S:
                await asyncio.sleep(due - now - SLEEP_SLACK_S)
            if (rest := due - loop.time()) > 0:
                time.sleep(rest)  # the last stretch: precise to ~0.1 ms, without spinning a CPU
            self.steps += 1
            still = []
            for seq in self.running:
                if seq.closed():
                    self._finish(seq, "abort")
                    continue
                self.generation_tokens += 1
                if seq.emit():
                    self._finish(seq, seq.finish_reason)
                else:
                    still.append(seq)
            self.running = still

    def kv_usage(self) -> float:
        return sum(s.prompt_tokens + s.k for s in self.running) / self.capacity

    def metrics(self) -> str:
        labels = f'engine="0",model_name="{self.model_name}"'
        lines = []

        def series(name: str, kind: str, help_: str, values: list[tuple[str, float]]) -> None:
            lines.extend([f"# HELP {name} {help_}", f"# TYPE {name} {kind}"])
            lines.extend(f"{name}{{{lab}}} {float(v)}" for lab, v in values)

        series("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.",
               [(labels, len(self.running))])
        series("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.",
               [(labels, len(self.waiting))])
        series("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.",
               [(labels, self.kv_usage())])
        series("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.",
               [(labels, self.prompt_tokens)])
        series("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.",
               [(labels, self.generation_tokens)])
        series("vllm:request_success_total", "counter", "Count of successfully processed requests.",
               [(f'{labels},finished_reason="{r}"', self.finished.get(r, 0)) for r in ("length", "stop")])
        series("vllm:engine_steps_total", "counter", "Engine steps run (sparkops' fake vLLM only).",
               [(labels, self.steps)])
        return "\n".join(lines) + "\n"

    async def stats(self) -> None:
        """vLLM's periodic engine line, while there is work."""
        last_p, last_g = self.prompt_tokens, self.generation_tokens
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            p, g = self.prompt_tokens, self.generation_tokens
            if p != last_p or g != last_g or self.running or self.waiting:
                log("INFO", "loggers.py:127",
                    f"Engine 000: Avg prompt throughput: {(p - last_p) / STATS_INTERVAL_S:.1f} tokens/s, "
                    f"Avg generation throughput: {(g - last_g) / STATS_INTERVAL_S:.1f} tokens/s, "
                    f"Running: {len(self.running)} reqs, Waiting: {len(self.waiting)} reqs, "
                    f"GPU KV cache usage: {100 * self.kv_usage():.1f}%, Prefix cache hit rate: 0.0%")
            last_p, last_g = p, g


# --- HTTP --------------------------------------------------------------------------------------

def response(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nserver: uvicorn\r\n"
            f"content-length: {len(body)}\r\ncontent-type: {content_type}\r\n\r\n")
    return head.encode("latin-1") + body


def json_response(status: int, obj: object) -> bytes:
    return response(status, json.dumps(obj).encode())


def error(status: int, message: str, kind: str = "BadRequestError", param: str | None = None) -> bytes:
    return json_response(status, {"error": {"message": message, "type": kind, "param": param, "code": status}})


class App:
    def __init__(self, engine: Engine, *, served: list[str], root: str, max_model_len: int, api_key: str | None,
                 seed: int):
        self.engine, self.served, self.root, self.max_model_len = engine, served, root, max_model_len
        self.api_key, self.seed = api_key, seed
        self.vocab = Vocabulary()
        self.writers: set[asyncio.StreamWriter] = set()

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line.strip():
                    break
                method, target, version = line.decode("latin-1").split(None, 2)
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = h.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                await self.dispatch(method, target.split("?", 1)[0], headers, body, writer)
                await writer.drain()
                if headers.get("connection", "").lower() == "close" or version.strip() == "HTTP/1.0":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:  # shutting down: the connection ends with the process
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def dispatch(self, method: str, path: str, headers: dict[str, str], body: bytes,
                       writer: asyncio.StreamWriter) -> None:
        if path.startswith("/v1") and self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
            writer.write(json_response(401, {"error": "Unauthorized"}))
            return
        get = {"/health": lambda: response(200, b""), "/ping": lambda: response(200, b""),
               "/version": lambda: json_response(200, {"version": __version__}),
               "/metrics": lambda: response(200, self.engine.metrics().encode(), "text/plain; version=0.0.4"),
               "/v1/models": self.models}
        post = {"/tokenize": self.tokenize, "/detokenize": self.detokenize}
        if method == "GET" and path in get:
            writer.write(get[path]())
        elif method == "POST" and path in post:
            writer.write(post[path](body))
        elif method == "POST" and path in ("/v1/completions", "/v1/chat/completions"):
            await self.generate(path == "/v1/chat/completions", body, writer)
        elif path in get or path in post or path in ("/v1/completions", "/v1/chat/completions"):
            writer.write(json_response(405, {"detail": "Method Not Allowed"}))
        else:
            writer.write(json_response(404, {"detail": "Not Found"}))

    def models(self) -> bytes:
        now = int(time.time())
        return json_response(200, {"object": "list", "data": [
            {"id": name, "object": "model", "created": now, "owned_by": "vllm", "root": self.root, "parent": None,
             "max_model_len": self.max_model_len, "permission": []} for name in self.served]})

    def tokenize(self, raw: bytes) -> bytes:
        try:
            body = json.loads(raw)
            if not body.get("messages") and not isinstance(body.get("prompt"), str):
                raise ValueError("a tokenize request needs a prompt (a string) or messages")
            words = [w for t in contents(body) for w in t.split()]
        except (ValueError, TypeError, AttributeError) as e:
            return error(400, str(e))
        return json_response(200, {"count": len(words), "max_model_len": self.max_model_len,
                                   "tokens": [self.vocab.id(w) for w in words],
                                   "token_strs": words if body.get("return_token_strs") else None})

    def detokenize(self, raw: bytes) -> bytes:
        try:
            tokens = json.loads(raw)["tokens"]
            if not isinstance(tokens, list):
                raise ValueError("tokens must be a list of token ids")
            return json_response(200, {"prompt": " ".join(self.vocab.word(t) for t in tokens)})
        except (ValueError, TypeError, KeyError) as e:
            return error(400, str(e))

    async def generate(self, chat: bool, raw: bytes, writer: asyncio.StreamWriter) -> None:
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("the request body must be a JSON object")
            if chat and not isinstance(body.get("messages"), list):
                raise ValueError("messages: field required")
            if not chat and "prompt" not in body:
                raise ValueError("prompt: field required")
            model = body.get("model") or self.served[0]
            n_prompt = prompt_tokens(body)
            asked = body.get("max_completion_tokens") if chat else None
            asked = asked if asked is not None else body.get("max_tokens")
            requested = None if asked is None else int(asked)
            if requested is not None and requested < 1:
                raise ValueError(f"max_tokens must be at least 1, got {requested}.")
        except (ValueError, TypeError, AttributeError) as e:
            writer.write(error(400, str(e)))
            return
        if model not in self.served:
            writer.write(error(404, f"The model `{model}` does not exist.", "NotFoundError", "model"))
            return
        too_long = length_error(self.max_model_len, n_prompt, requested)
        if too_long:
            writer.write(error(400, too_long))
            return
        n = requested if requested is not None else self.max_model_len - n_prompt
        seed = body.get("seed") if isinstance(body.get("seed"), int) else self.seed
        rng = random.Random(f"{seed}\0" + "\0".join(contents(body)))
        eos_at = rng.randrange(EOS_MIN_TOKENS, EOS_MAX_TOKENS)
        finish = "length"
        if not body.get("ignore_eos") and eos_at < n:
            n, finish = eos_at, "stop"
        stream = bool(body.get("stream"))
        loop = asyncio.get_running_loop()
        seq = Seq(rid=f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", model=model, chat=chat, stream=stream,
                  usage=bool((body.get("stream_options") or {}).get("include_usage")), prompt_tokens=n_prompt,
                  n=n, finish_reason=finish, rng=rng, writer=writer, done=loop.create_future())
        if stream:
            writer.write(b"HTTP/1.1 200 OK\r\nserver: uvicorn\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                         b"transfer-encoding: chunked\r\n\r\n")
        self.engine.add(seq)
        reason = await seq.done
        if reason == "abort":
            raise ConnectionResetError("the client went away")
        if not stream:
            text = "".join(seq.text)
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                       "finish_reason": finish} if chat else
                      {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None})
            writer.write(json_response(200, {"id": seq.rid, "object": "chat.completion" if chat else "text_completion",
                                             "created": seq.created, "model": model, "choices": [choice],
                                             "usage": seq.usage_obj()}))


# --- the process -------------------------------------------------------------------------------

def serve(ns) -> int:
    served = ns.served_model_name or [ns.model_tag]
    log("INFO", "api_utils.py:345", f" ▄▄ ▄█ █     █     █ ▀▄▀ █  version {__version__}")
    log("INFO", "api_utils.py:345", f"  █▄█▀ █     █     █     █  model   {ns.model_tag}")
    log("INFO", "api_utils.py:345", "   ▀▀  ▀▀▀▀▀ ▀▀▀▀▀ ▀     ▀")
    log("INFO", "api_utils.py:273", f"non-default args: {getattr(ns, 'non_default', {})}")
    if ns.headless:
        log("INFO", "serve.py:212", f"Launching headless rank {ns.node_rank}: no API server on this node")
        return asyncio.run(_wait_for_signal())
    root = find_model(ns.model_tag, ns.revision)
    if root is None:
        log("ERROR", "serve.py:61", "Failed to load the model config")
        print("Traceback (most recent call last):\n  File \"vllm/transformers_utils/config.py\", line 541, in "
              "get_config\nhuggingface_hub.errors.LocalEntryNotFoundError: Cannot find the requested files in the "
              f"local cache: no config.json for {ns.model_tag} (revision {ns.revision or 'main'}) under "
              f"{os.environ.get('HF_HOME') or '~/.cache/huggingface'}/hub", flush=True)
        return 1
    config = json.loads((root / "config.json").read_text())
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        log("INFO", "arg_utils.py:779", f"HF_HUB_OFFLINE is True, replace model_id [{ns.model_tag}] to model_path "
                                         f"[{root}]")
    arch = (config.get("architectures") or ["LlamaForCausalLM"])[0]
    max_model_len = int(ns.max_model_len or config.get("max_position_embeddings") or 2048)
    log("INFO", "model.py:623", f"Resolved architecture: {arch}")
    log("INFO", "model.py:1788", f"Using max model len {max_model_len}")
    try:
        time_scale = float(os.environ.get(perf.TIME_SCALE_ENV) or 1.0)
    except ValueError:
        time_scale = 1.0
    gmu = perf.DEFAULT_GPU_MEMORY_UTILIZATION if ns.gpu_memory_utilization is None else ns.gpu_memory_utilization
    settings = perf.Settings(max_num_seqs=ns.max_num_seqs, max_model_len=max_model_len,
                             kv_cache_dtype=ns.kv_cache_dtype, enforce_eager=ns.enforce_eager,
                             gpu_memory_utilization=gmu)
    eng = "EngineCore"
    log("INFO", "core.py:116", f"Initializing a V1 LLM engine (v{__version__}) with config: model='{root}', "
        f"served_model_name={served[0]}, max_seq_len={max_model_len}, kv_cache_dtype={ns.kv_cache_dtype}, "
        f"enforce_eager={ns.enforce_eager}, max_num_seqs={ns.max_num_seqs}, seed={ns.seed}, "
        f"time_scale={time_scale}", eng)
    weights = sum(f.stat().st_size for f in root.glob("*.safetensors")) / 2**30 if ns.load_format != "dummy" else 0.0
    log("INFO", "gpu_model_runner.py:5347", f"Model loading took {weights:.4f} GiB memory and 0.01 seconds", eng)
    capacity = perf.kv_capacity_tokens(ns.kv_cache_dtype)
    kv_gib = capacity * kv_bytes_per_token(config, ns.kv_cache_dtype) / 2**30
    log("INFO", "gpu_worker.py:560", f"Available KV cache memory: {kv_gib:.2f} GiB", eng)
    problem = settings.error()
    if problem is not None:
        time.sleep(FAIL_AFTER_S)  # profiling memory, as vLLM does before it finds the cache too small
        where = "core.py:866"
        for line in ("EngineCore failed to start.", "Traceback (most recent call last):",
                     '  File "vllm/v1/engine/core.py", line 857, in run_engine_core',
                     '  File "vllm/v1/core/kv_cache_utils.py", line 731, in check_enough_kv_cache_memory',
                     problem):
            log("ERROR", where, line, eng)
        print("RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
              flush=True)
        return 1
    log("INFO", "kv_cache_utils.py:2177", f"GPU KV cache size: {capacity:,} tokens", eng)
    log("INFO", "kv_cache_utils.py:2178", f"Maximum concurrency for {max_model_len:,} tokens per request: "
        f"{capacity / max_model_len:.2f}x", eng)
    if ns.max_num_seqs is None:
        log("INFO", "scheduler.py:252", f"max_num_seqs not set: {settings.seqs} (what the KV cache holds at "
            f"max_model_len, at most {perf.DEFAULT_MAX_NUM_SEQS})", eng)
    if not ns.enforce_eager:
        log("INFO", "gpu_model_runner.py:4587", "Graph capturing finished in 0 secs, took 0.00 GiB", eng)
    log("INFO", "core.py:210", "init engine (profile, create kv cache, warmup model) took 0.01 seconds", eng)
    api_key = ns.api_key or os.environ.get("VLLM_API_KEY") or None
    return asyncio.run(_serve(ns, settings, served, str(root), max_model_len, api_key, time_scale, capacity))


async def _wait_for_signal() -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    return 0


async def _serve(ns, settings: perf.Settings, served: list[str], root: str, max_model_len: int,
                 api_key: str | None, time_scale: float, capacity: int) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    engine = Engine(settings, time_scale, served[0], capacity)
    app = App(engine, served=served, root=root, max_model_len=max_model_len, api_key=api_key, seed=ns.seed)
    host = ns.host or "0.0.0.0"
    try:
        server = await asyncio.start_server(app.connection, host, ns.port, reuse_address=True, backlog=1024)
    except OSError as exc:
        log("ERROR", "api_server.py:1890", f"OSError: [Errno {exc.errno}] {exc.strerror}: ({host!r}, {ns.port})")
        return 1
    tasks = [asyncio.create_task(engine.run())]
    if not ns.disable_log_stats:
        tasks.append(asyncio.create_task(engine.stats()))
    log("INFO", "api_server.py:1880", f"Starting vLLM API server 0 on http://{host}:{ns.port}")
    log("INFO", "launcher.py:37", "Available routes are: /health, /ping, /version, /metrics, /tokenize, /detokenize, "
                                  "/v1/models, /v1/completions, /v1/chat/completions")
    uvicorn(f"Started server process [{PID}]")
    uvicorn("Waiting for application startup.")
    uvicorn("Application startup complete.")
    await stop.wait()
    uvicorn("Shutting down")
    server.close()
    for t in tasks:
        t.cancel()
    for w in list(app.writers):
        w.close()
    uvicorn("Application shutdown complete.")
    uvicorn(f"Finished server process [{PID}]")
    return 0

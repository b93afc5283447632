"""A synthetic OpenAI-compatible streaming server with known timings and injectable faults.

Raw asyncio rather than aiohttp.web: one pre-encoded chunk write per token keeps the server
several times cheaper per chunk than any client, so a client-overhead benchmark measures the
client. Token 0 of a request is written at recv + prefill, token k at that plus gap_1 + ... +
gap_k (absolute deadlines, so lateness never accumulates), where, with P prompt tokens,

    prefill = ttft_s + P / prefill_tok_s            (just ttft_s when prefill_tok_s is None)
    gap_k   = itl_s + (P + k) * itl_per_context_token_s

and the server records when each choice event was written, next to the prefill and gaps it
injected (the truth a client's pp and tg rates are checked against; see SyntheticServer.records).

Tokens are whitespace-separated words: P is the number of words in all message contents (chat)
or in the prompt (completions), with no template tokens. /tokenize and /detokenize answer as
vLLM's do; a word's token id is the word itself as an integer (see word_id), so every worker
process agrees on it with no shared state. A request with P + max_tokens > max_model_len gets
vLLM's HTTP 400.

Per-request behaviour comes from a directive anywhere in the prompt text, e.g.
`[[sparkops: fault=error_event at=3 ttft_ms=20 itl_ms=5 tokens=10 role=immediate]]`;
faults: http500, error_event, stall (goes silent), drop (closes the socket mid-stream);
`prefill_tok_s=2000` (or `none`) and `itl_ctx_us=5` (microseconds per context token) set the
two context-dependent terms above. The directive's own words count as prompt tokens.
Run `python -m sparkops.testing.synthetic_server --ttft-ms 50 --itl-ms 10` for a standalone one.

`--workers N` forks N processes sharing the port (SO_REUSEPORT; the kernel spreads the
connections): at hundreds of concurrent streams one Python process is itself late, and its
lateness would be charged to the client under test. Workers then record to files.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TextIO

DIRECTIVE = re.compile(r"\[\[sparkops:([^\]]*)\]\]")
FAULTS = ("http500", "error_event", "stall", "drop")
SPIN_S = 0.0015
# A token id has a decimal digit per ~3.3 bits: Python's json refuses ints over 4300 digits
# (sys.int_info.default_max_str_digits), so /tokenize refuses words longer than this.
MAX_WORD_BYTES = 1024


@dataclass(frozen=True)
class ServerConfig:
    ttft_s: float = 0.05
    itl_s: float = 0.01
    output_tokens: int | None = None  # None: the request's max_tokens, as with ignore_eos
    role: str = "with_first"  # role-only first chunk: "none", "with_first" (vLLM), "immediate"
    reasoning_tokens: int = 0  # the first N tokens arrive as delta.reasoning_content
    token_text: str = " tok"
    stall_s: float = 3600.0
    fault: str | None = None
    fault_at: int = 1  # token index where error_event/stall/drop strikes
    record: bool = True
    prefill_tok_s: float | None = None  # None: the first token is due at ttft_s, whatever the prompt
    itl_per_context_token_s: float = 0.0  # added to itl_s per token of context (prompt + generated)
    max_model_len: int = 131072
    # Speculative decoding's counters on /metrics (vLLM's names; 0: the server does not
    # speculate and has no /metrics): each step proposes spec_tokens drafts, of which the first
    # spec_accepted are accepted, so a step emits 1 + spec_accepted tokens. Only the counters:
    # the tokens' timing stays ttft_s / itl_s.
    spec_tokens: int = 0
    spec_accepted: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.spec_accepted <= self.spec_tokens:
            raise ValueError(f"spec_accepted must be within 0..spec_tokens, not {self.spec_accepted}")
        if self.prefill_tok_s is not None and not self.prefill_tok_s > 0:
            raise ValueError(f"prefill_tok_s must be > 0 or None, not {self.prefill_tok_s}")
        if not self.itl_per_context_token_s >= 0:
            raise ValueError(f"itl_per_context_token_s must be >= 0, not {self.itl_per_context_token_s}")
        if self.max_model_len < 1:
            raise ValueError(f"max_model_len must be >= 1, not {self.max_model_len}")


def request_config(base: ServerConfig, text: str) -> ServerConfig:
    m = DIRECTIVE.search(text)
    if not m:
        return base
    kv = dict(p.split("=", 1) for p in re.split(r"[\s,]+", m.group(1).strip()) if "=" in p)
    cfg = base
    if "fault" in kv:
        if kv["fault"] not in FAULTS:
            raise ValueError(f"unknown fault {kv['fault']!r}")
        cfg = replace(cfg, fault=kv["fault"])
    if "at" in kv:
        cfg = replace(cfg, fault_at=int(kv["at"]))
    if "tokens" in kv:
        cfg = replace(cfg, output_tokens=int(kv["tokens"]))
    if "reasoning" in kv:
        cfg = replace(cfg, reasoning_tokens=int(kv["reasoning"]))
    if "role" in kv:
        cfg = replace(cfg, role=kv["role"])
    if "ttft_ms" in kv:
        cfg = replace(cfg, ttft_s=float(kv["ttft_ms"]) / 1000)
    if "itl_ms" in kv:
        cfg = replace(cfg, itl_s=float(kv["itl_ms"]) / 1000)
    if "prefill_tok_s" in kv:
        v = kv["prefill_tok_s"]
        cfg = replace(cfg, prefill_tok_s=None if v.lower() == "none" else float(v))
    if "itl_ctx_us" in kv:
        cfg = replace(cfg, itl_per_context_token_s=float(kv["itl_ctx_us"]) / 1e6)
    return cfg


def _contents(body: dict) -> list[str]:
    """The texts whose words are a request's prompt tokens: each message's content (its text
    parts, when a list) for chat, else the prompt (or each string of a list of them)."""
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
    """A request's prompt tokens: the words of its contents (a completions prompt of token ids
    counts its ids)."""
    p = body.get("prompt")
    if not body.get("messages") and isinstance(p, list) and p and all(isinstance(x, int) for x in p):
        return len(p)
    return sum(len(t.split()) for t in _contents(body))


def word_id(word: str) -> int:
    """A word's token id: a 0x01 byte and the word's UTF-8 bytes, read as one big-endian integer.

    Reversible and the same in every process (no vocabulary to share between --workers), at the
    price of ids far above any real vocabulary's (JSON carries them; JavaScript's doubles would
    not). The 0x01 keeps leading NUL bytes; words over MAX_WORD_BYTES are refused."""
    raw = word.encode()
    if len(raw) > MAX_WORD_BYTES:
        raise ValueError(f"a word of {len(raw)} bytes is over the synthetic tokenizer's {MAX_WORD_BYTES}")
    return int.from_bytes(b"\x01" + raw, "big")


def id_word(tid: object) -> str:
    """The word of a token id from word_id; ValueError for an id it cannot have made."""
    if not isinstance(tid, int) or isinstance(tid, bool) or tid <= 1:
        raise ValueError(f"token id {tid!r} is not in the synthetic vocabulary")
    raw = tid.to_bytes((tid.bit_length() + 7) // 8, "big")
    try:
        word = raw[1:].decode() if raw[0] == 1 else ""
    except UnicodeDecodeError:
        word = ""
    if word.split() != [word]:
        raise ValueError(f"token id {tid} is not in the synthetic vocabulary")
    return word


def length_error(cfg: ServerConfig, n_prompt: int, max_tokens: int | None) -> str | None:
    """vLLM's (0.10) message for a request that does not fit the context, or None."""
    m = cfg.max_model_len
    if n_prompt >= m:
        return (f"This model's maximum context length is {m} tokens. However, your request has "
                f"{n_prompt} input tokens. Please reduce the length of the input messages.")
    if max_tokens is not None and n_prompt + max_tokens > m:
        return (f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's "
                f"maximum context length is {m} tokens and your request has {n_prompt} input tokens "
                f"({max_tokens} > {m} - {n_prompt}).")
    return None


def _event(obj) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"


def _frame(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse(obj) -> bytes:
    return _frame(_event(obj))


@functools.lru_cache(maxsize=64)
def _templates(model: str, chat: bool, text: str, role: bool) -> tuple[bytes, ...]:
    """Pre-encoded chunks for id "cmpl-0" (patched per request): a request burst must not
    make the server late, or its lateness would be blamed on the client."""
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(delta_or_text, finish=None):
        c = {"index": 0, "logprobs": None, "finish_reason": finish}
        c |= {"delta": delta_or_text} if chat else {"text": delta_or_text}
        return _event({"id": "cmpl-0", "object": obj, "created": 0, "model": model, "choices": [c]})

    role_chunk = chunk({"role": "assistant", "content": ""}) if chat and role else b""
    tok = chunk({"content": text} if chat else text)
    reason = chunk({"reasoning_content": text}) if chat else tok
    last = chunk({"content": text} if chat else text, "length")
    return role_chunk, tok, reason, last


class _Stream:
    """One streaming response: its chunks and its schedule."""

    def __init__(self, proto, cfg: ServerConfig, body: dict, chat: bool, rid: str, now: float,
                 n_prompt: int):
        self.proto, self.cfg, self.rid, self.t_recv = proto, cfg, rid, now
        self.n = cfg.output_tokens or int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        self.n = min(self.n, cfg.max_model_len - n_prompt)  # as vLLM: never past the context
        self.usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.prompt_tokens = n_prompt
        self.prefill_s = cfg.ttft_s + n_prompt / cfg.prefill_tok_s if cfg.prefill_tok_s else cfg.ttft_s
        self.role_chunk, self.tok, self.reason, self.last = _templates(
            str(body.get("model", "synthetic")), chat, cfg.token_text, cfg.role != "none")
        b = b'"%s"' % rid.encode()
        self.role_chunk, self.tok, self.reason, self.last = (
            _frame(c.replace(b'"cmpl-0"', b, 1)) if c else c
            for c in (self.role_chunk, self.tok, self.reason, self.last))
        self.k = 0
        self.writes: list[float] = []
        self.handle: asyncio.TimerHandle | None = None
        self.t_loop = self.due = 0.0

    def start(self, loop) -> None:
        # Deadlines on the loop's clock (what call_at uses); records on perf_counter.
        self.t_loop = loop.time() - (time.perf_counter() - self.t_recv)
        if self.cfg.role == "immediate" and self.role_chunk:
            self._write(self.role_chunk)
        self._schedule(loop, self.prefill_s)

    def offset(self, k: int) -> float:
        """When token k is due, after recv: the prefill, then gaps 1..k (in closed form)."""
        off = self.prefill_s + k * self.cfg.itl_s
        if c := self.cfg.itl_per_context_token_s:
            off += c * (k * self.prompt_tokens + k * (k + 1) / 2)
        return off

    def gaps(self) -> list[float]:
        """The decode gaps injected before tokens 1..n-1."""
        c, itl, p = self.cfg.itl_per_context_token_s, self.cfg.itl_s, self.prompt_tokens
        return [itl + (p + k) * c for k in range(1, self.n)] if c else [itl] * (self.n - 1)

    def _schedule(self, loop, offset: float) -> None:
        # epoll rounds timeouts up to whole ms; wake early and spin the rest (see emit).
        self.due = self.t_recv + offset
        self.handle = loop.call_at(self.t_loop + offset - SPIN_S, self.emit, loop)

    def _write(self, data: bytes) -> None:
        self.proto.transport.write(data)
        if self.cfg.record:
            self.writes.append(time.perf_counter())

    def emit(self, loop) -> None:
        cfg, k, tr = self.cfg, self.k, self.proto.transport
        if tr is None or tr.is_closing():
            return
        while time.perf_counter() < self.due:
            pass
        if cfg.fault is not None and k == cfg.fault_at:
            if cfg.fault == "error_event":
                err = {"error": {"object": "error", "message": "synthetic mid-stream failure",
                                 "type": "InternalServerError", "param": None, "code": 500}}
                tr.write(_sse(err) + _sse(b"[DONE]") + b"0\r\n\r\n")
                self.proto.finished(self)
            elif cfg.fault == "drop":
                tr.close()
            elif cfg.fault == "stall":
                self.handle = loop.call_later(cfg.stall_s, tr.close)
            return
        if k == 0 and cfg.role == "with_first" and self.role_chunk:
            self._write(self.role_chunk)
        self._write(self.last if k == self.n - 1 else self.reason if k < cfg.reasoning_tokens else self.tok)
        self.k = k + 1
        if self.k < self.n:
            self._schedule(loop, self.offset(self.k))
            return
        tail = b""
        if self.usage:
            u = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.n,
                 "total_tokens": self.prompt_tokens + self.n}
            tail += _sse({"id": self.rid, "object": "chat.completion.chunk", "created": 0,
                          "model": "synthetic", "choices": [], "usage": u})
        tr.write(tail + _sse(b"[DONE]") + b"0\r\n\r\n")
        self.proto.finished(self)


class _Protocol(asyncio.Protocol):
    def __init__(self, server: SyntheticServerCore):
        self.server, self.buf = server, bytearray()
        self.transport: asyncio.Transport | None = None
        self.stream: _Stream | None = None
        self.scheduled, self.t_arrival = False, 0.0

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        if self.stream is not None and self.stream.handle is not None:
            self.stream.handle.cancel()
        self.transport = None

    def data_received(self, data):
        # Stamp arrival now, handle later (call_soon): in a burst of requests, the TTFT clock
        # of the last one must not include the time spent handling the others.
        if not self.buf:
            self.t_arrival = time.perf_counter()
        self.buf += data
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._next)

    def _next(self):
        self.scheduled = False
        while self.stream is None and self.transport is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            length = 0
            for h in head[1:]:
                name, _, value = h.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4:end + 4 + length])
            del self.buf[:end + 4 + length]
            method, path = head[0].split(" ")[:2]
            t_arrival, self.t_arrival = self.t_arrival, time.perf_counter()
            self.server.handle(self, method, path, body, t_arrival)

    def respond(self, status: str, obj) -> None:
        data = json.dumps(obj).encode()
        assert self.transport is not None  # requests are handled only while connected (_next)
        self.transport.write(b"HTTP/1.1 %s\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n%s" % (status.encode(), len(data), data))

    def respond_text(self, status: str, text: str) -> None:
        data = text.encode()
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 %s\r\ncontent-type: text/plain; version=0.0.4\r\n"
                             b"content-length: %d\r\n\r\n%s" % (status.encode(), len(data), data))

    def finished(self, stream: _Stream) -> None:
        self.server.done(stream)
        self.stream = None
        self._next()


class SyntheticServerCore:
    def __init__(self, config: ServerConfig, *, id_prefix: str = "cmpl-", records_file: TextIO | None = None):
        self.config, self.count = config, 0
        self.records: list[dict] = []
        self.id_prefix, self.records_file = id_prefix, records_file
        self.spec: dict[str, int] = {"drafts": 0, "draft_tokens": 0, "accepted": 0}
        self.spec_per_position: list[int] = [0] * config.spec_tokens

    def speculate(self, n: int) -> None:
        """The counters a speculating vLLM adds for n generated tokens: steps of 1 + accepted."""
        k, a = self.config.spec_tokens, self.config.spec_accepted
        full, rest = divmod(n, 1 + a)
        steps = full + (1 if rest else 0)
        self.spec["drafts"] += steps
        self.spec["draft_tokens"] += steps * k
        self.spec["accepted"] += n - steps
        for p in range(k):
            self.spec_per_position[p] += full * (p < a) + (1 if rest and p < rest - 1 else 0)

    def metrics_text(self) -> str:
        lines = []
        for key, name in (("drafts", "drafts"), ("draft_tokens", "draft_tokens"), ("accepted", "accepted_tokens")):
            lines += [f"# TYPE vllm:spec_decode_num_{name}_total counter",
                      f'vllm:spec_decode_num_{name}_total{{engine="0",model_name="synthetic"}} {float(self.spec[key])}']
        lines.append("# TYPE vllm:spec_decode_num_accepted_tokens_per_pos_total counter")
        lines += [f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{engine="0",model_name="synthetic",'
                  f'position="{p}"}} {float(v)}' for p, v in enumerate(self.spec_per_position)]
        return "\n".join(lines) + "\n"

    def handle(self, proto: _Protocol, method: str, path: str, raw: bytes, now: float) -> None:
        if method == "GET" and path == "/health":  # what a router asks before it sends anything
            return proto.respond("200 OK", {})
        if method == "GET" and path == "/v1/models":
            return proto.respond("200 OK", {"object": "list", "data": [
                {"id": "synthetic", "object": "model", "root": "synthetic",
                 "max_model_len": self.config.max_model_len}]})
        if method == "GET" and path == "/metrics" and self.config.spec_tokens:
            return proto.respond_text("200 OK", self.metrics_text())
        if method == "GET" and path == "/version":
            return proto.respond("200 OK", {"version": "synthetic"})
        if method == "GET" and path == "/sparkops/records":
            records, self.records = self.records, []
            return proto.respond("200 OK", records)
        if method == "POST" and path in ("/tokenize", "/detokenize"):
            return self.tokenizer(proto, path, raw)
        chat = path == "/v1/chat/completions"
        if method != "POST" or not (chat or path == "/v1/completions"):
            return proto.respond("404 Not Found", {"error": {"message": f"no route {path}"}})
        try:
            body = json.loads(raw)
            cfg = self.config
            if b"[[sparkops:" in raw:  # only then pay for finding the directive
                cfg = request_config(cfg, json.dumps(body.get("messages") or body.get("prompt")))
            n_prompt = prompt_tokens(body)
            requested = body.get("max_tokens") or body.get("max_completion_tokens")  # as _Stream.n
            error = length_error(cfg, n_prompt, None if requested is None else int(requested))
        except (ValueError, TypeError, AttributeError) as e:
            return proto.respond("400 Bad Request", {"error": {"message": str(e)}})
        if error is not None:
            return proto.respond("400 Bad Request", {"error": {
                "message": error, "type": "BadRequestError", "param": None, "code": 400}})
        self.count += 1
        if cfg.fault == "http500":
            return proto.respond("500 Internal Server Error", {"error": {
                "message": "synthetic server failure", "type": "InternalServerError", "code": 500}})
        assert proto.transport is not None  # requests are handled only while connected (_next)
        stream = _Stream(proto, cfg, body, chat, f"{self.id_prefix}{self.count}", now, n_prompt)
        if self.config.spec_tokens:
            self.speculate(stream.n)
        proto.stream = stream
        if not body.get("stream"):
            # A whole answer (llama-benchy's warm-up, usage probes): one JSON body when the last
            # token is due; not recorded, since no token was timed.
            loop = asyncio.get_running_loop()
            stream.handle = loop.call_later(max(0.0, now + stream.offset(stream.n - 1) - time.perf_counter()),
                                            self._whole, proto, stream, chat)
            return
        proto.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                              b"transfer-encoding: chunked\r\n\r\n")
        stream.start(asyncio.get_running_loop())

    def _whole(self, proto: _Protocol, s: _Stream, chat: bool) -> None:
        if proto.transport is None:
            return
        text = s.cfg.token_text * s.n
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"} if chat
                  else {"index": 0, "text": text, "finish_reason": "length"})
        proto.respond("200 OK", {"id": s.rid, "object": "chat.completion" if chat else "text_completion",
                                 "created": 0, "model": "synthetic", "choices": [choice],
                                 "usage": {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.n,
                                           "total_tokens": s.prompt_tokens + s.n}})
        proto.stream = None
        proto._next()

    def tokenizer(self, proto: _Protocol, path: str, raw: bytes) -> None:
        """vLLM's /tokenize (a prompt or chat messages; no template tokens) and /detokenize."""
        try:
            body = json.loads(raw)
            if path == "/detokenize":
                tokens = body["tokens"]
                if not isinstance(tokens, list):
                    raise ValueError("tokens must be a list of token ids")
                return proto.respond("200 OK", {"prompt": " ".join(id_word(t) for t in tokens)})
            if not body.get("messages") and not isinstance(body.get("prompt"), str):
                raise ValueError("a tokenize request needs a prompt (a string) or messages")
            words = [w for t in _contents(body) for w in t.split()]
            ids = [word_id(w) for w in words]
        except (ValueError, TypeError, AttributeError, KeyError) as e:
            return proto.respond("400 Bad Request", {"error": {
                "message": str(e), "type": "BadRequestError", "param": None, "code": 400}})
        proto.respond("200 OK", {"count": len(ids), "max_model_len": self.config.max_model_len, "tokens": ids,
                                 "token_strs": words if body.get("return_token_strs") else None})

    def done(self, s: _Stream) -> None:
        if s.cfg.record:
            rec = {"id": s.rid, "recv": s.t_recv, "writes": s.writes,
                   "ttft_s": s.cfg.ttft_s, "itl_s": s.cfg.itl_s,
                   "prompt_tokens": s.prompt_tokens, "prefill_s": s.prefill_s, "gaps_s": s.gaps()}
            if self.records_file is not None:
                self.records_file.write(json.dumps(rec) + "\n")
            else:
                self.records.append(rec)


class SyntheticServer:
    """Start with `with SyntheticServer(cfg) as srv:`; `srv.base_url` is then live.

    In-thread by default (tests); `process=True` runs it in a subprocess, optionally pinned
    to `cpus`, so that a benchmark's client has its core (and GIL) to itself.
    """

    def __init__(self, config: ServerConfig | None = None, *, process: bool = False,
                 cpus: set[int] | None = None, workers: int = 1):
        if workers > 1 and not process:
            raise ValueError("workers > 1 needs process=True")
        self.config = config or ServerConfig()
        self.process, self.cpus, self.workers = process, cpus, workers
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._core: SyntheticServerCore | None = None
        self._records_dir: str | None = None
        self._read: dict[Path, int] = {}  # records file -> bytes already returned

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> SyntheticServer:  # noqa: PYI034
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if self.process:
            cmd = [sys.executable, "-m", "sparkops.testing.synthetic_server", "--port", "0",
                   "--config-json", json.dumps(asdict(self.config))]
            if self.workers > 1:
                self._records_dir = tempfile.mkdtemp(prefix="synthetic-records-")
                cmd += ["--workers", str(self.workers), "--records-dir", self._records_dir]
            # Its own session: stop() signals the workers too.
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
            if self.cpus:
                os.sched_setaffinity(self._proc.pid, self.cpus)
            assert self._proc.stdout is not None  # stdout=PIPE
            line = self._proc.stdout.readline()
            if not line.startswith("PORT "):
                self.stop()
                raise RuntimeError(f"synthetic server did not start: {line!r}")
            self.port = int(line.split()[1])
            return
        ready = threading.Event()
        core = self._core = SyntheticServerCore(self.config)

        def serve():
            self._loop = asyncio.new_event_loop()
            srv = self._loop.run_until_complete(self._loop.create_server(
                lambda: _Protocol(core), "127.0.0.1", 0, backlog=4096))
            self.port = srv.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()
            srv.close()
            self._loop.close()

        self._thread = threading.Thread(target=serve, name="synthetic-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("synthetic server did not start within 10 s")

    def records(self) -> list[dict]:
        """Server-side timings of completed streams since the last call (then cleared).

        Each: id, recv (perf_counter when the request's first byte arrived), writes (when each
        choice event was written, a role-only chunk included: the n tokens are writes[-n:] of a
        stream that ran to its end), ttft_s and itl_s (configured), and the truth injected:
        prompt_tokens, prefill_s (token 0 due at recv + prefill_s) and gaps_s (n - 1 gaps, gap k
        before token k). True rates: pp = prompt_tokens / prefill_s, and
        tg = len(gaps_s) / sum(gaps_s) (tokens after the first over the time they took).
        """
        if self._records_dir is not None:
            out = []
            for path in sorted(Path(self._records_dir).glob("*.jsonl")):
                with open(path, "rb") as f:  # each worker appends whole lines to its own file
                    f.seek(self._read.get(path, 0))
                    data = f.read()
                done = data.rfind(b"\n") + 1
                self._read[path] = self._read.get(path, 0) + done
                out += [json.loads(line) for line in data[:done].splitlines() if line]
            return out
        with urllib.request.urlopen(self.base_url + "/sparkops/records", timeout=30) as r:
            return json.load(r)

    @property
    def process_group(self) -> int | None:
        """The process group of a server run as processes (process=True), while it runs."""
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        if self._proc is not None:
            group = self._proc.pid
            try:
                os.killpg(group, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self._proc.wait(timeout=10)
            self._proc = None
            _wait_group_gone(group)
        if self._records_dir is not None:
            shutil.rmtree(self._records_dir, ignore_errors=True)
            self._records_dir = None
            self._read.clear()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            assert self._thread is not None  # the loop runs in it
            self._thread.join(timeout=10)
            self._loop = None


def _wait_group_gone(group: int, timeout_s: float = 5.0) -> None:
    """Until no process of the server's group (its forked workers) is left; SIGKILL at the end."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline + timeout_s:
        try:
            os.killpg(group, signal.SIGKILL if time.monotonic() > deadline else 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    ap.add_argument("--ttft-ms", type=float, help="time to first token")
    ap.add_argument("--itl-ms", type=float, help="gap between tokens")
    ap.add_argument("--prefill-tok-s", type=float, help="prefill speed: adds prompt tokens / this to the TTFT")
    ap.add_argument("--itl-ctx-us", type=float, help="added to the ITL per token of context, in microseconds")
    ap.add_argument("--max-model-len", type=int, help="context length (prompt + max_tokens)")
    ap.add_argument("--config-json", help="a full ServerConfig as JSON")
    ap.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    ap.add_argument("--records-dir", help="with --workers: where each worker appends its records")
    args = ap.parse_args(argv)
    cfg = ServerConfig(**json.loads(args.config_json)) if args.config_json else ServerConfig()
    if args.ttft_ms is not None:
        cfg = replace(cfg, ttft_s=args.ttft_ms / 1000)
    if args.itl_ms is not None:
        cfg = replace(cfg, itl_s=args.itl_ms / 1000)
    if args.prefill_tok_s is not None:
        cfg = replace(cfg, prefill_tok_s=args.prefill_tok_s)
    if args.itl_ctx_us is not None:
        cfg = replace(cfg, itl_per_context_token_s=args.itl_ctx_us / 1e6)
    if args.max_model_len is not None:
        cfg = replace(cfg, max_model_len=args.max_model_len)

    port, worker, reuse = args.port, 0, args.workers > 1
    if reuse:
        # Reserve a port for all workers; this socket never listens, so gets no connections.
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", port))
        port = holder.getsockname()[1]
        for i in range(1, args.workers):
            if os.fork() == 0:
                worker = i
                break
    records = None
    if reuse and args.records_dir:
        records = open(Path(args.records_dir) / f"{worker}.jsonl", "a", buffering=1)  # noqa: SIM115

    async def serve():
        core = SyntheticServerCore(cfg, id_prefix=f"cmpl-{worker}-" if reuse else "cmpl-",
                                   records_file=records)
        srv = await asyncio.get_running_loop().create_server(
            lambda: _Protocol(core), "127.0.0.1", port, backlog=4096, reuse_port=reuse or None)
        if worker == 0:
            print(f"PORT {srv.sockets[0].getsockname()[1]}", flush=True)
        await srv.serve_forever()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

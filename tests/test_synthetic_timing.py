"""The synthetic server's context-dependent timings (prefill per prompt token, decode gaps that
grow with the context), its vLLM-like tokenizer endpoints and context limit, and the truth it
records: what a benchmark client's pp and tg rates are checked against."""

import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from sparkops.testing.synthetic_server import ServerConfig, SyntheticServer, id_word, word_id

TOL_S = 0.008  # as tests/test_bench_client.py: generous for a loaded runner
TOKEN = b'"content": " tok"'  # a token's chat chunk (the role-only chunk has "content": "")


def post(base: str, path: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(base + path, json.dumps(body).encode(), {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def get(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return json.load(r)


def stream(port: int, body: dict) -> tuple[float, list[float]]:
    """Send a streaming chat request on a plain socket: (perf_counter before sending, when each
    token's chunk arrived)."""
    data = json.dumps(body | {"stream": True}).encode()
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(data))
    arrivals: list[float] = []
    buf = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        s.sendall(head + data)
        while b"data: [DONE]" not in buf:
            chunk = s.recv(1 << 16)
            t = time.perf_counter()
            assert chunk, f"connection closed mid-stream: {buf[-300:]!r}"
            buf += chunk
            arrivals += [t] * (buf.count(TOKEN) - len(arrivals))
    assert buf.startswith(b"HTTP/1.1 200 OK"), buf[:300]
    return t0, arrivals


def chat(text: str, max_tokens: int = 4) -> dict:
    return {"model": "synthetic", "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens}


def count(base: str, body: dict) -> int:
    status, out = post(base, "/tokenize", {"model": "synthetic", "messages": body["messages"]})
    assert status == 200
    return out["count"]


@pytest.fixture(scope="module")
def server():
    # Its own process (as in test_bench_client.py): in ours it would hold the GIL while we stamp.
    with SyntheticServer(ServerConfig(ttft_s=0.02, itl_s=0.005), process=True) as srv:
        yield srv


def test_word_ids_are_the_words_themselves():
    for w in ["tok", "é", "日本語", "\x00lead", "a" * 1024, "[[sparkops:"]:
        assert id_word(word_id(w)) == w
    assert word_id("a") == 0x0161 and word_id("ab") != word_id("ba")
    for bad in [0, 1, 2, -5, 0x0120, 0x02_61, True, "97"]:  # no 0x01 lead, empty or whitespace word
        with pytest.raises(ValueError):
            id_word(bad)
    with pytest.raises(ValueError, match="over the synthetic tokenizer"):
        word_id("a" * 1025)


def test_tokenize_and_detokenize_agree_across_worker_processes():
    """With --workers the kernel spreads connections over processes: a tokenize answered by one
    and a detokenize by another must agree, with no state shared between them."""
    text = "The  quick\tbrown fox —\n jumps  über 日本語 \x00nul [[sparkops: itl_ms=1]]"
    words = text.split()
    with SyntheticServer(ServerConfig(max_model_len=4096, output_tokens=2), process=True, workers=2) as srv:
        base = srv.base_url
        tok = [post(base, "/tokenize", {"model": "synthetic", "prompt": text}) for _ in range(16)]
        assert all(t == tok[0] for t in tok)  # every connection a new one; any worker
        status, out = tok[0]
        assert status == 200 and out["count"] == len(words) == len(out["tokens"]) == 11
        assert out["max_model_len"] == 4096 and out["token_strs"] is None
        for _ in range(16):
            assert post(base, "/detokenize", {"model": "synthetic", "tokens": out["tokens"]}) == (
                200, {"prompt": " ".join(words)})
        # messages: the words of every content, no template tokens; parts lists by their text
        msgs = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": text}]}]
        status, m = post(base, "/tokenize", {"model": "synthetic", "messages": msgs,
                                             "add_special_tokens": False, "return_token_strs": True})
        assert status == 200 and m["count"] == 2 + len(words)
        assert m["tokens"][2:] == out["tokens"] and m["token_strs"] == ["be", "brief", *words]
        # and a completion's usage says the same count, from either worker
        for _ in range(6):
            body = {"model": "synthetic", "messages": msgs, "max_tokens": 2, "stream": True,
                    "stream_options": {"include_usage": True}}
            req = urllib.request.Request(base + "/v1/chat/completions", json.dumps(body).encode())
            with urllib.request.urlopen(req, timeout=10) as r:
                events = [json.loads(line[6:]) for line in r.read().decode().splitlines()
                          if line.startswith("data: {")]
            assert events[-1]["usage"]["prompt_tokens"] == m["count"]
        recs = srv.records()
        assert {r["id"].split("-")[1] for r in recs} <= {"0", "1"}
        assert all(r["prompt_tokens"] == m["count"] for r in recs)
        # ids no word could have made, and malformed requests: vLLM-like 400s
        assert post(base, "/detokenize", {"model": "synthetic", "tokens": [5]})[0] == 400
        assert post(base, "/detokenize", {"model": "synthetic", "tokens": "x"})[0] == 400
        assert post(base, "/tokenize", {"model": "synthetic"})[0] == 400
        assert get(base, "/version") == {"version": "synthetic"}


@pytest.mark.timing
def test_a_long_prompt_is_prefilled_at_the_configured_speed(server):
    """First token at recv + ttft + prompt_tokens / prefill_tok_s, measured at the client."""
    directive = "[[sparkops: ttft_ms=5 prefill_tok_s=25000 tokens=3]]"
    long, short = chat(directive + " word" * 3000), chat(directive + " word")
    n_long, n_short = count(server.base_url, long), count(server.base_url, short)
    assert (n_long, n_short) == (3004, 5)  # the directive's own four words count
    for body, n in [(long, n_long), (short, n_short), (long, n_long)]:
        t0, arrivals = stream(server.port, body)
        prefill = 0.005 + n / 25000
        assert prefill <= arrivals[0] - t0 <= prefill + TOL_S
        assert len(arrivals) == 3
    recs = server.records()
    assert [r["prompt_tokens"] for r in recs] == [n_long, n_short, n_long]
    assert [r["prefill_s"] for r in recs] == pytest.approx([0.005 + n / 25000 for n in (n_long, n_short, n_long)])
    for r in recs:  # the server wrote token 0 when it was due
        assert r["prefill_s"] <= r["writes"][-3] - r["recv"] <= r["prefill_s"] + TOL_S


@pytest.mark.timing
def test_decode_gaps_grow_with_the_context(server):
    """Gap k = itl + (prompt_tokens + k) * itl_ctx, on absolute deadlines: token k at the first
    token plus gaps 1..k, however late one write was."""
    body = chat("[[sparkops: ttft_ms=5 itl_ms=1 itl_ctx_us=1000 tokens=11]] a b c d e", max_tokens=50)
    p = count(server.base_url, body)
    assert p == 10
    gaps = [0.001 + (p + k) * 0.001 for k in range(1, 11)]  # 12 ms, 13 ms, ... 21 ms
    t0, arrivals = stream(server.port, body)
    assert len(arrivals) == 11
    measured = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert measured == pytest.approx(gaps, abs=TOL_S / 2)  # a late token: one gap longer, the next shorter
    late, early = sum(measured[-3:]) / 3, sum(measured[:3]) / 3
    assert late - early == pytest.approx(0.007, abs=TOL_S / 2)  # 1 ms more per token of context
    due = [sum(gaps[:k]) for k in range(11)]
    assert [a - arrivals[0] for a in arrivals] == pytest.approx(due, abs=TOL_S)
    (rec,) = server.records()
    assert rec["prompt_tokens"] == p and rec["gaps_s"] == pytest.approx(gaps, rel=1e-12)
    assert rec["prefill_s"] == pytest.approx(0.005)
    writes = rec["writes"][-11:]
    assert [w - writes[0] for w in writes] == pytest.approx(due, abs=TOL_S)


def test_too_long_a_request_is_refused_as_vllm_does():
    cfg = ServerConfig(ttft_s=0.001, itl_s=0.001, max_model_len=64)
    with SyntheticServer(cfg) as srv:
        base = srv.base_url
        (model,) = get(base, "/v1/models")["data"]
        assert model["max_model_len"] == 64
        words = " ".join(["w"] * 60)
        status, out = post(base, "/v1/chat/completions", chat(words, max_tokens=5))
        assert status == 400 and out["error"]["type"] == "BadRequestError" and out["error"]["code"] == 400
        assert out["error"]["message"] == (
            "'max_tokens' or 'max_completion_tokens' is too large: 5. This model's maximum context length "
            "is 64 tokens and your request has 60 input tokens (5 > 64 - 60).")
        status, out = post(base, "/v1/completions", {"model": "synthetic", "prompt": words + " w" * 10})
        assert status == 400 and out["error"]["message"] == (
            "This model's maximum context length is 64 tokens. However, your request has 70 input "
            "tokens. Please reduce the length of the input messages.")
        # fits exactly: streamed; with no max_tokens, at most the rest of the context
        body = chat(words, max_tokens=4) | {"stream": True}
        req = urllib.request.Request(base + "/v1/chat/completions", json.dumps(body).encode())
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200 and r.read().count(TOKEN) == 4
        body = {"model": "synthetic", "prompt": words, "stream": True}
        req = urllib.request.Request(base + "/v1/completions", json.dumps(body).encode())
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.read().count(b'"text": " tok"') == 4
        assert [len(r["gaps_s"]) + 1 for r in srv.records()] == [4, 4]


def test_records_carry_the_truth_a_client_is_checked_against():
    cfg = ServerConfig(ttft_s=0.002, itl_s=0.001, prefill_tok_s=50_000, itl_per_context_token_s=2e-6,
                       output_tokens=5)
    with SyntheticServer(cfg) as srv:
        body = {"model": "synthetic", "max_tokens": 99, "stream": True, "messages": [
            {"role": "system", "content": "one two three"}, {"role": "user", "content": "four five"}]}
        req = urllib.request.Request(srv.base_url + "/v1/chat/completions", json.dumps(body).encode())
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
        # a directive overrides the configured speeds for its request only
        body["messages"][1]["content"] = "[[sparkops: prefill_tok_s=none itl_ctx_us=0]]"
        req = urllib.request.Request(srv.base_url + "/v1/chat/completions", json.dumps(body).encode())
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
        first, second = srv.records()
    assert first["prompt_tokens"] == 5
    assert first["prefill_s"] == pytest.approx(0.002 + 5 / 50_000)
    assert first["gaps_s"] == pytest.approx([0.001 + (5 + k) * 2e-6 for k in range(1, 5)])
    assert first["ttft_s"] == 0.002 and first["itl_s"] == 0.001  # the fields there were
    assert len(first["writes"]) == 6 and first["writes"][0] >= first["recv"]  # role chunk + 5 tokens
    # the true rates: pp over the injected prefill, tg over the tokens after the first
    pp = first["prompt_tokens"] / first["prefill_s"]
    tg = len(first["gaps_s"]) / sum(first["gaps_s"])
    assert pp == pytest.approx(5 / 0.0021) and tg == pytest.approx(1 / (0.001 + (5 + 5 / 2) * 2e-6))
    assert (second["prompt_tokens"], second["prefill_s"], second["gaps_s"]) == (6, 0.002, [0.001] * 4)


def test_defaults_inject_what_they_did_before():
    with SyntheticServer(ServerConfig(ttft_s=0.003, itl_s=0.002, output_tokens=3)) as srv:
        body = {"model": "synthetic", "prompt": "a b c " * 1000, "stream": True}
        req = urllib.request.Request(srv.base_url + "/v1/completions", json.dumps(body).encode())
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
        (rec,) = srv.records()
    assert (rec["prompt_tokens"], rec["prefill_s"], rec["gaps_s"]) == (3000, 0.003, [0.002, 0.002])


def test_bad_speeds_are_refused():
    with pytest.raises(ValueError, match="prefill_tok_s"):
        ServerConfig(prefill_tok_s=0)
    with pytest.raises(ValueError, match="itl_per_context_token_s"):
        ServerConfig(itl_per_context_token_s=-1e-6)
    with SyntheticServer(ServerConfig()) as srv:
        status, out = post(srv.base_url, "/v1/chat/completions", chat("[[sparkops: prefill_tok_s=-3]]"))
        assert status == 400 and "prefill_tok_s" in out["error"]["message"]

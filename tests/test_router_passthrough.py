"""What the replicas layout's router (vllm-router, started by sparkops/node_scripts/router.py as
`up` starts it) does to an answer: a streamed chat of a reasoning model (gpt-oss, Qwen3: vLLM's
reasoning parser puts the thinking in `delta.reasoning_content` / `delta.reasoning`), the final
`usage` chunk a client asked for with `stream_options.include_usage`, and `[DONE]`, must reach
the client event for event as the server sent them; the same for a plain answer.

The server is a stub speaking vLLM's stream format with fixed events, so any change the router
makes shows as a difference (the fake vLLM has no reasoning parser)."""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from conftest import free_port

pytestmark = [pytest.mark.vllm]

KEY = "sk-passthrough-test"
ROOT = Path(__file__).resolve().parent.parent


def chunk(delta: dict, finish: str | None = None) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "reasoner",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


USAGE = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
EVENTS = [chunk({"role": "assistant", "content": ""}),
          chunk({"reasoning_content": "The user greets;", "reasoning": "The user greets;"}),
          chunk({"reasoning_content": " answer briefly.", "reasoning": " answer briefly."}),
          chunk({"content": "Hello"}), chunk({"content": " there."}), chunk({}, "stop")]
MESSAGE = {"id": "chatcmpl-2", "object": "chat.completion", "created": 1, "model": "reasoner",
           "choices": [{"index": 0, "finish_reason": "stop", "message": {
               "role": "assistant", "content": "Hello there.", "reasoning_content": "The user greets.",
               "reasoning": "The user greets.", "tool_calls": []}}], "usage": USAGE}


class Stub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            return self.send(200, {})
        if self.path == "/v1/models":
            return self.send(200, {"object": "list", "data": [{"id": "reasoner", "object": "model"}]})
        self.send(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if self.headers.get("authorization") != f"Bearer {KEY}":
            return self.send(401, {"error": "Unauthorized"})
        if not body.get("stream"):
            return self.send(200, MESSAGE)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        events = list(EVENTS)
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                           "model": "reasoner", "choices": [], "usage": USAGE})
        for event in events:
            self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            self.wfile.flush()
            time.sleep(0.01)
        self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True


def events(response: requests.Response) -> list:
    out = []
    for line in response.iter_lines():
        if line.startswith(b"data: "):
            payload = line[len(b"data: "):]
            out.append(payload.decode() if payload == b"[DONE]" else json.loads(payload))
    return out


@pytest.fixture(scope="module")
def router(vllm_venv):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stub = f"http://127.0.0.1:{server.server_address[1]}"
    port, metrics = free_port(), free_port()
    proc = subprocess.Popen(
        [str(vllm_venv / "bin" / "python3"), "-c", (ROOT / "sparkops/node_scripts/router.py").read_text(),
         "--host", "127.0.0.1", "--port", str(port), "--policy", "cache_aware", "--metrics-host", "127.0.0.1",
         "--metrics-port", str(metrics), "--startup-timeout", "60", "--health-interval", "5", stub],
        env=os.environ | {"VLLM_API_KEY": KEY}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"the router did not start: {proc.communicate()[0][-2000:]}")
    yield stub, url
    proc.terminate()
    out = proc.communicate(timeout=30)[0]
    server.shutdown()
    assert "sparkops-router: stopping on SIGTERM" in out, out[-2000:]  # and says why it ended


def ask(url: str, **extra) -> requests.Response:
    return requests.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=30,
                         stream=bool(extra.get("stream")),
                         json={"model": "reasoner", "messages": [{"role": "user", "content": "hi"}], **extra})


def test_a_streamed_reasoning_answer_and_its_usage_pass_through_unchanged(router):
    stub, url = router
    direct = events(ask(stub, stream=True, stream_options={"include_usage": True}))
    routed = events(ask(url, stream=True, stream_options={"include_usage": True}))
    assert direct[-2]["usage"] == USAGE and direct[-1] == "[DONE]"  # the stub's own stream, as vLLM's
    assert routed == direct
    assert events(ask(url, stream=True)) == events(ask(stub, stream=True))  # no usage asked: none added


def test_a_plain_answer_with_reasoning_passes_through_and_the_key_is_demanded(router):
    stub, url = router
    assert ask(url).json() == ask(stub).json() == MESSAGE
    refused = requests.post(f"{url}/v1/chat/completions", timeout=30,
                            json={"model": "reasoner", "messages": [{"role": "user", "content": "hi"}]})
    assert refused.status_code == 401

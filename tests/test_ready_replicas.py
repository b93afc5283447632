"""`up`'s readiness of a data-parallel deployment against a real HTTP server that answers like
vLLM's API server (health, models, completions, /metrics with a counter per engine): ready when
every replica's counter moves; otherwise an error naming the idle replica, its node, its log
and the fix. The node commands run for real on this machine (host "local")."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sparkops.apply import ready
from sparkops.base.errors import StepError
from sparkops.base.progress import Progress
from sparkops.plan.steps import WaitReady, Watch
from sparkops.remote.connection import NodeConn
from sparkops.remote.group import NodeGroup


class FakeApi:
    """Engines take completions in turn; `dead` engines never do (requests go to the others)."""

    def __init__(self, engines: int, dead: set[int]):
        self.served = dict.fromkeys(range(engines), 0)
        self.live = [e for e in range(engines) if e not in dead]
        self.turn = 0
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, body: str, kind: str = "application/json") -> None:
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/metrics":
                    with api.lock:
                        lines = [f'vllm:request_success_total{{engine="{e}",finished_reason="length",'
                                 f'model_name="m"}} {n}.0' for e, n in api.served.items()]
                    self.reply("\n".join(lines) + "\n", "text/plain")
                elif self.path == "/v1/models":
                    self.reply(json.dumps({"data": [{"id": "m"}]}))
                else:
                    self.reply("{}")

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                with api.lock:
                    engine = api.live[api.turn % len(api.live)]
                    api.turn += 1
                    api.served[engine] += 1
                self.reply(json.dumps({"choices": [{"text": "x"}]}))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def setup(engines: int, dead: set[int]) -> tuple[FakeApi, NodeGroup, WaitReady]:
    api = FakeApi(engines, dead)
    group = NodeGroup([NodeConn({"name": n, "host": "local"}, {}) for n in ("head", "worker")])
    watch = tuple(Watch(n, "vllm", ("echo", "running"), ("echo", f"{n}: engine log, last line"))
                  for n in ("head", "worker"))
    return api, group, WaitReady(api.url, "m", 30.0, watch, ((0, "head"), (1, "worker")))


def test_ready_once_every_replica_has_served(capsys):
    api, group, wait = setup(2, set())
    ready.wait_ready(group, wait, None, Progress())
    assert api.served[0] > 0 and api.served[1] > 0
    assert "every replica served: engine 0 on head" in capsys.readouterr().err
    api.server.shutdown()


def test_a_replica_that_never_serves_is_named_with_its_node_and_log(monkeypatch):
    monkeypatch.setattr(ready, "REPLICA_WAIT_S", 2.0)
    api, group, wait = setup(2, {1})
    wait = WaitReady(wait.url, wait.model, 1.0, wait.watch, wait.replicas)
    with pytest.raises(StepError) as e:
        ready.wait_ready(group, wait, None, Progress(quiet=True))
    text = e.value.render()
    assert "[worker] step 'ready': the API answers, but replica(s) 1 on worker served none" in text
    assert "worker: engine log, last line" in text and "data-parallel RPC port" in text
    assert api.served[1] == 0 and api.served[0] > 0
    api.server.shutdown()

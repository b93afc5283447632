"""Whether a recorded deployment is whole, from recorded service states (apply/health.py): the
status lines of service.sh and `docker inspect`, and the problems `status` and `up` name."""
from __future__ import annotations

from sparkops.apply.health import assess, parse_status
from sparkops.apply.ready import Probe

STATE = {"nodes": ["spark-1", "spark-2"], "services": ["vllm"], "api_url": "http://x:8000",
         "served_model_name": "m"}
READY = Probe(True, "ready", "ok")


def test_status_lines():
    assert parse_status("running pid=12 uptime_s=90 processes=4", True) == {
        "running": True, "uptime_s": 90, "started": None, "orphaned": []}
    assert parse_status("orphaned pids=13,14", False)["orphaned"] == [13, 14]
    assert parse_status("stopped", False)["running"] is False
    docker = parse_status("running started=2026-12-01T10:00:00Z image=sha256:ab hash=cd", True)
    assert docker["running"] and docker["started"] == "2026-12-01T10:00:00Z"
    assert not parse_status("exited started=2026-12-01T10:00:00Z image=sha256:ab hash=cd", True)["running"]


def test_whole_deployment_has_no_problems():
    up = {"running": True, "orphaned": []}
    assert assess(STATE, {"spark-1": {"vllm": up}, "spark-2": {"vllm": up}}, {}, READY) == []


def test_every_missing_piece_is_named():
    up, dead = {"running": True, "orphaned": []}, {"running": False, "orphaned": [41, 42]}
    problems = assess(STATE, {"spark-1": {"vllm": dead}}, {"spark-2": "cannot reach spark-2:22"},
                      Probe(False, "completion", "a 1-token completion answered 500"))
    assert problems == ["vllm on spark-1 died and left processes behind (pids 41, 42)",
                        "spark-2 is unreachable (cannot reach spark-2:22)",
                        "the API does not complete a 1-token request (a 1-token completion answered 500)"]
    assert assess(STATE, {"spark-1": {"vllm": up}, "spark-2": {}}, {}, READY) == ["vllm is not running on spark-2"]

"""Running work on every node at once and keeping every node's outcome (GroupResult), on real
processes of this machine (nodes with host = "local": no SSH, the same code path above it)."""
from __future__ import annotations

import threading
import time

import pytest

from sparkops.base.errors import SparkopsError, StepError
from sparkops.remote.connection import NodeConn
from sparkops.remote.group import GroupResult, NodeGroup
from sparkops.remote.result import CommandTimeout, Result


def local_group(*names: str) -> NodeGroup:
    return NodeGroup([NodeConn({"name": n, "host": "local"}, {}) for n in names])


def run_script(conn: NodeConn) -> Result:
    """spark-a succeeds, spark-b exits 3 with a log line, spark-c runs past its timeout."""
    script = {"spark-a": "echo ok", "spark-b": "echo 'CUDA out of memory' >&2; exit 3",
              "spark-c": "echo started; sleep 5"}[conn.name]
    res = conn.run(["sh", "-c", script], timeout=0.5)
    if not res.ok:
        raise StepError(f"exited {res.rc}", host=conn.name, step="start", log_tail=res.tail())
    return res


def test_group_result_keeps_every_node_and_names_every_failure():
    results = local_group("spark-a", "spark-b", "spark-c").map(run_script)
    assert isinstance(results, GroupResult) and list(results) == ["spark-a", "spark-b", "spark-c"]
    assert list(results.succeeded) == ["spark-a"] and results.succeeded["spark-a"].stdout == "ok\n"
    assert set(results.failed) == {"spark-b", "spark-c"}
    errors = results.errors()
    assert isinstance(errors["spark-c"], CommandTimeout) and errors["spark-c"].log_tail == ["started"]
    with pytest.raises(SparkopsError) as caught:
        results.raise_failures("step 'start'")
    text = caught.value.render()
    assert "step 'start' failed on 2 nodes: spark-b, spark-c" in text
    assert "[spark-b] exited 3" in text and "| CUDA out of memory" in text
    assert "[spark-c] `sh -c 'echo started; sleep 5'` did not finish within 0.5s" in text


def test_all_succeeded_gives_the_values():
    values = local_group("a", "b").map(lambda conn: conn.name.upper()).raise_failures("x")
    assert values == {"a": "A", "b": "B"}
    assert local_group().map(lambda conn: 1) == {}


def test_a_bug_is_raised_as_it_is_not_reported_as_a_node_failure():
    def buggy(conn: NodeConn) -> None:
        if conn.name == "b":
            raise KeyError("a bug")
    results = local_group("a", "b").map(buggy)
    with pytest.raises(KeyError):
        results.raise_failures("x")
    with pytest.raises(KeyError):
        results.errors()


@pytest.mark.timing
def test_nodes_run_at_the_same_time():
    start = time.monotonic()
    local_group("a", "b", "c", "d").map(lambda conn: conn.run(["sleep", "0.5"], timeout=10))
    assert time.monotonic() - start < 1.5  # four half-second sleeps, in parallel


def test_follow_ends_a_stream_that_never_ends_when_asked():
    conn = NodeConn({"name": "local", "host": "local"}, {})
    lines: list[str] = []
    stop = threading.Event()
    follower = threading.Thread(target=conn.follow, args=(
        ["sh", "-c", "echo one; echo two; exec sleep 60"], lines.append, stop))
    follower.start()
    deadline = time.monotonic() + 5
    while len(lines) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    follower.join(timeout=5)
    assert not follower.is_alive() and lines == ["one", "two"]

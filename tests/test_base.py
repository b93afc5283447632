"""The shared base: one error naming every failed node, progress meters, tables, atomic files."""
from __future__ import annotations

import io
import os
import stat

import pytest

from sparkops.base.errors import ConnectError, StepError, every_node
from sparkops.base.files import atomic_write
from sparkops.base.progress import Meter, Progress, duration, number
from sparkops.base.tables import markdown_table, text_table


def test_every_node_names_each_failed_node_with_its_own_evidence():
    errors = {"spark-a": StepError("`vllm serve` exited 1", host="spark-a", step="start-head",
                                   log_tail=["CUDA out of memory"], fix="lower gpu_memory_utilization"),
              "spark-b": ConnectError("cannot reach 10.0.0.2:22", host="spark-b", step="start-head",
                                      fix="check the node is on")}
    err = every_node(errors, "step 'start-head'")
    text = err.render()
    assert text.splitlines()[0] == "error: step 'start-head': failed on 2 nodes: spark-a, spark-b"
    assert "[spark-a] `vllm serve` exited 1" in text and "| CUDA out of memory" in text
    assert "[spark-b] cannot reach 10.0.0.2:22" in text
    assert "fix: lower gpu_memory_utilization" in text and "fix: check the node is on" in text
    assert err.fix is None  # different fixes: each stays with its node
    assert every_node({"spark-a": errors["spark-a"]}, "x") is errors["spark-a"]  # one: itself
    errors["spark-b"].step = "connect"  # no step in common: `what` says what failed
    assert every_node(errors, "step 'start-head'").render().splitlines()[0] == \
        "error: step 'start-head' failed on 2 nodes: spark-a, spark-b"


def test_meter_lines_sum_parts_and_say_rate_and_time_left():
    out = io.StringIO()
    meter = Meter(Progress(out), "copy", 100, unit="MB", every=3600, rate=True)
    meter.start -= 10  # as if it began 10 s ago
    meter.update(10, part="a")  # throttled: within `every`
    meter.update(30, part="b")
    assert out.getvalue() == ""
    meter.last -= 3600
    meter.update(20, part="a")  # a: 20, b: 30
    line = out.getvalue().strip()
    assert line.startswith("copy: 50 of 100 MB (5.0/s), 10.0s, about 10s left"), line
    meter.update(50, part="b")  # 70: throttled again
    assert len(out.getvalue().splitlines()) == 1
    meter.update(50, part="a", note="verified")  # 100: the end is always shown
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("copy: 100 of 100 MB (") and last.endswith(", verified") and "left" not in last


def test_meter_always_shows_the_end():
    out = io.StringIO()
    meter = Progress(out).meter("requests", 3, every=3600)
    for done in (1, 2, 3):
        meter.update(done, note="1 FAILED" if done == 3 else "")
    assert out.getvalue().count("\n") == 1
    assert out.getvalue().startswith("requests: 3 of 3, ") and out.getvalue().strip().endswith("1 FAILED")


def test_durations_and_numbers_read_like_people_write_them():
    assert [duration(s) for s in (0.4, 42, 185, 7620)] == ["0s", "42s", "3m05s", "2h07m"]
    assert [number(n) for n in (3, 20.0, 4.99999, 0.5, 1234.5)] == ["3", "20", "5.0", "0.5", "1234"]


def test_text_table_pads_columns_and_can_leave_out_the_header():
    rows = [{"name": "smoke", "nodes": 1}, {"name": "gpt-oss-120b", "nodes": 2}]
    assert text_table(rows, ["name", "nodes"]) == "NAME          NODES\nsmoke         1\ngpt-oss-120b  2"
    assert text_table(rows, ["name", "nodes"], header=False, indent="  ", min_width={"name": 14}) == \
        "  smoke           1\n  gpt-oss-120b    2"
    assert text_table([], ["name"]) == "NAME"


def test_markdown_table_escapes_pipes_and_line_breaks():
    table = markdown_table([{"a": "x|y", "b": "one\ntwo"}], ["a", "b"], headers={"a": "A"})
    assert table == "| A | b |\n|---|---|\n| x\\|y | one two |"


def test_atomic_write_replaces_whole_with_the_final_mode(tmp_path):
    path = tmp_path / "sub" / "secret.toml"
    atomic_write(path, "token = 'a'\n", mode=0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    atomic_write(path, b"token = 'b'\n", mode=0o644, fsync=True)
    assert path.read_text() == "token = 'b'\n" and stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(path.parent) == ["secret.toml"]  # no temp file left


def test_atomic_write_that_fails_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")

    class Boom(str):  # its bytes cannot be made: the write fails after the temp file exists
        def encode(self, *args, **kwargs):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write(path, Boom("new"))
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["results.json"]

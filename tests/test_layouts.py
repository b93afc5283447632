"""Layouts (sparkops/config/layouts.py) and `inv plan`'s layouts section: the settings each
layout means on a cluster, names for tables, and which layouts of a profile fit, with the
measured crossover once results exist."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_report import layout_doc

from sparkops.base.errors import SparkopsError
from sparkops.bench.report.layout_choice import layout_lines
from sparkops.bench.results.files import write_result
from sparkops.config import load_config
from sparkops.config.layouts import describe, layout_of, layout_sets, parse_layouts

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated(isolated_override):
    """No developer override, no SPARKOPS_* variables."""


def test_layout_settings_on_two_sparks_and_on_nodes_of_four_gpus():
    assert layout_sets("tp", 2, 1) == ["serving.tensor_parallel=2", "serving.pipeline_parallel=1",
                                       "serving.data_parallel=1"]
    assert layout_sets("dp", 2, 1)[0::2] == ["serving.tensor_parallel=1", "serving.data_parallel=2"]
    assert layout_sets("solo", 2, 1)[0::2] == ["serving.tensor_parallel=1", "serving.data_parallel=1"]
    assert layout_sets("dp", 2, 4)[0::2] == ["serving.tensor_parallel=4", "serving.data_parallel=2"]
    # dp is vLLM's own launcher's; replicas are separate servers behind the router
    assert layout_sets("dp", 2, 1)[3] == 'distributed.backend="mp"'
    assert layout_sets("replicas", 2, 1) == ["serving.tensor_parallel=1", "serving.pipeline_parallel=1",
                                             "serving.data_parallel=2", 'distributed.backend="replicas"']
    with pytest.raises(SparkopsError):
        layout_sets("ep", 2, 1)


def test_layouts_flag_is_checked():
    assert parse_layouts("tp, dp,tp,solo") == ["tp", "dp", "solo"]
    for bad in ("tp,xx", ",", ""):
        with pytest.raises(SparkopsError) as e:
            parse_layouts(bad)
        assert "tp, dp, replicas, solo" in e.value.render()


def test_a_configuration_knows_its_layout():
    for sets, kind, words in ((["serving.tensor_parallel=2"], "tp", "TP=2"),
                              (["serving.tensor_parallel=1"], "solo", "TP=1, one node"),
                              (["serving.tensor_parallel=1", "serving.data_parallel=2"], "dp", "DP=2"),
                              (["serving.tensor_parallel=1", "serving.data_parallel=2",
                                'distributed.backend="replicas"'], "replicas", "2 replicas + router")):
        cfg = load_config("qwen2.5-7b-instruct", "spark-pair", root=ROOT, environ={}, sets=sets)
        assert (layout_of(cfg.doc), describe(cfg.doc)) == (kind, words)


def test_plan_lists_the_layouts_that_fit_and_what_results_say(tmp_path):
    def lines(profile):
        cfg = load_config(profile, "spark-pair", root=ROOT, environ={})
        return layout_lines(cfg, load_config, [], tmp_path / "results")

    big = lines("llama-3.1-70b-instruct")
    assert big[1].startswith("  tp       TP=2") and big[1].endswith("<- this profile as configured")
    assert big[2].startswith("  dp       does not fit: the model does not fit: needs about 144.4 GiB per node")
    assert big[3].startswith("  replicas does not fit: the model does not fit: needs about 144.4 GiB per node")
    assert len(big) == 5  # one layout fits: nothing to compare
    small = lines("gpt-oss-120b")
    assert [line.split()[0] for line in small[1:5]] == ["tp", "dp", "replicas", "solo"] and "fits:" in small[2]
    assert small[3].startswith("  replicas 2 replicas + router  fits: 37.3 GiB")
    assert small[5] == ("  which is fastest is not measured here yet: inv bench-all --profiles gpt-oss-120b "
                        "--layouts tp,dp,replicas,solo, then inv report")
    folder = tmp_path / "results"
    for layout, tp, dp, points in (("tp", 2, 1, [(1, 69.0), (64, 471.8)]), ("dp", 1, 2, [(1, 52.0), (64, 567.9)])):
        write_result(layout_doc("gpt-oss-120b", layout, tp, dp, points, "2025-06-05T10:00:00+00:00"), folder)
    assert lines("gpt-oss-120b")[5] == ("  measured: gpt-oss-120b: TP=2 fastest at concurrency 1 (by 33% over DP=2 "
                                        "at 1); above that DP=2, by 20% over TP=2 at 64.")

"""Which layout wins at which load (sparkops/bench/report/crossover.py), from cells tables written by
hand: the sentence names the winner of each stretch of concurrencies, the margin at its end,
and calls a lead inside the runs' spreads a tie."""
from __future__ import annotations

import pandas as pd
import pytest

from sparkops.bench.report.crossover import crossovers, leads, sentence


def cells(profile: str, series: dict[str, list[tuple[int, float, float]]]) -> pd.DataFrame:
    rows = [{"label": profile, "profile": profile, "layout": layout, "kind": "serving", "metric": "out_tok_s",
             "tg": 256, "concurrency": c, "status": "ok", "mean": mean, "std": std}
            for layout, points in series.items() for c, mean, std in points]
    return pd.DataFrame(rows)


def test_the_published_gpt_oss_pattern_reads_as_a_crossover():
    """peers.md: TP=2 69.0 tok/s at c1, 471.8 at c64; a replica per Spark 567.9 at c64."""
    df = cells("gpt-oss-120b", {"TP=2": [(1, 69.0, 0.5), (16, 300.0, 3.0), (64, 471.8, 4.0)],
                                "DP=2": [(1, 52.0, 0.5), (16, 280.0, 3.0), (64, 567.9, 4.0)]})
    text = crossovers(df)["gpt-oss-120b"]
    assert text == ("gpt-oss-120b: TP=2 fastest up to concurrency 16 (by 7% over DP=2 at 16); "
                    "above that DP=2, by 20% over TP=2 at 64.")


def test_one_winner_everywhere_and_three_layouts():
    df = cells("small", {"TP=2": [(1, 90.0, 1.0), (8, 400.0, 5.0)], "DP=2": [(1, 60.0, 1.0), (8, 500.0, 5.0)],
                         "TP=1, one node": [(1, 80.0, 1.0), (8, 260.0, 2.0)]})
    found = leads(df)
    assert [(f.concurrency, f.winner, f.runner_up) for f in found] == [(1, "TP=2", "TP=1, one node"),
                                                                       (8, "DP=2", "TP=2")]
    assert found[1].margin == pytest.approx(0.25)
    one = cells("one", {"DP=2": [(1, 60.0, 1.0), (8, 500.0, 5.0)], "TP=2": [(1, 50.0, 1.0), (8, 400.0, 5.0)]})
    assert crossovers(one)["one"] == "one: DP=2 fastest at every concurrency measured (1 to 8), by 25% over TP=2 at 8."


def test_a_lead_inside_the_spread_is_called_so():
    df = cells("close", {"TP=2": [(1, 100.0, 3.0), (4, 300.0, 2.0)], "DP=2": [(1, 96.0, 2.0), (4, 200.0, 2.0)]})
    assert crossovers(df)["close"].endswith("(within the spread of the runs at concurrency 1).")


def test_middle_stretch_and_a_single_first_point():
    found = leads(cells("p", {"A": [(1, 10.0, 0.0), (2, 10.0, 0.0), (4, 30.0, 0.0)],
                              "B": [(1, 5.0, 0.0), (2, 20.0, 0.0), (4, 10.0, 0.0)]}))
    assert sentence("p", found) == ("p: A fastest at concurrency 1 (by 100% over B at 1); "
                                    "then B at 2 (by 100% over A at 2); above that A, by 200% over B at 4.")


def test_nothing_to_say_without_two_layouts_at_one_concurrency():
    assert crossovers(cells("solo", {"TP=2": [(1, 10.0, 0.0)]})) == {}
    assert crossovers(cells("apart", {"TP=2": [(1, 10.0, 0.0)], "DP=2": [(2, 10.0, 0.0)]})) == {}
    assert crossovers(pd.DataFrame()) == {}


def test_runs_of_other_reply_lengths_are_not_compared():
    df = cells("mixed", {"TP=2": [(1, 100.0, 0.0)], "DP=2": [(1, 50.0, 0.0)]})
    other = cells("mixed", {"DP=2": [(1, 500.0, 0.0)], "TP=2": [(1, 400.0, 0.0)]}).assign(tg=16)
    text = crossovers(pd.concat([df, other]))["mixed"]
    assert text == ("mixed (tg16): DP=2 fastest at concurrency 1, by 25% over TP=2 at 1. "
                    "mixed (tg256): TP=2 fastest at concurrency 1, by 100% over DP=2 at 1.")

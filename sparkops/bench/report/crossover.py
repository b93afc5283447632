"""Which layout of a profile is fastest at which load: the report's sentence per profile.
Pure: the report's cells table in, words and numbers out.

From the serving sweeps' output throughput (mean over runs, with its std): at each concurrency
every layout of the profile measured, the fastest one and by how much it beats the next. A
lead smaller than the two runs' spreads together is called a tie ("within the spread"), so a
sentence never names a winner the numbers cannot tell apart.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

METRIC = "out_tok_s"


@dataclass(frozen=True)
class Lead:
    concurrency: int
    winner: str  # layout label, "TP=2"
    runner_up: str
    margin: float  # winner / runner-up - 1
    tie: bool  # the lead is inside the two spreads


def leads(points: pd.DataFrame) -> list[Lead]:
    """`points`: one profile's ok serving cells of METRIC, with columns layout, concurrency,
    mean, std. Per concurrency that at least two layouts measured, who leads."""
    out = []
    for c, at in points.groupby("concurrency", sort=True):
        best = at.groupby("layout").agg(mean=("mean", "max"), std=("std", "max")).sort_values("mean", ascending=False)
        if len(best) < 2:
            continue
        (w, first), (r, second) = list(best.iterrows())[:2]
        spread = _std(first["std"]) + _std(second["std"])
        margin = first["mean"] / second["mean"] - 1 if second["mean"] > 0 else math.inf
        out.append(Lead(int(c), str(w), str(r), float(margin), first["mean"] - second["mean"] <= spread))
    return out


def _std(v: float | None) -> float:
    return 0.0 if v is None or pd.isna(v) else float(v)


def sentence(profile: str, found: list[Lead]) -> str | None:
    """'smoke: TP=2 fastest up to concurrency 16; above that DP=2, by 21% at 64.' None when
    fewer than two layouts were measured at a common concurrency."""
    if not found:
        return None
    runs: list[list[Lead]] = []
    for lead in found:
        if runs and runs[-1][-1].winner == lead.winner:
            runs[-1].append(lead)
        else:
            runs.append([lead])
    lo, hi = found[0].concurrency, found[-1].concurrency
    if len(runs) == 1:
        end = found[-1]
        where = f"at every concurrency measured ({lo} to {hi})" if lo != hi else f"at concurrency {hi}"
        return f"{profile}: {end.winner} fastest {where}, {_by(end)} at {hi}{_ties(found)}."
    parts = []
    for i, run in enumerate(runs):
        first, last = run[0].concurrency, run[-1].concurrency
        if i == 0:
            span = f"up to concurrency {last}" if len(run) > 1 else f"at concurrency {first}"
            parts.append(f"{run[0].winner} fastest {span} ({_by(run[-1])} at {last})")
        elif i == len(runs) - 1:
            parts.append(f"above that {run[0].winner}, {_by(run[-1])} at {last}")
        else:
            span = f"from {first} to {last}" if first != last else f"at {first}"
            parts.append(f"then {run[0].winner} {span} ({_by(run[-1])} at {last})")
    return f"{profile}: " + "; ".join(parts) + _ties(found) + "."


def _by(lead: Lead) -> str:
    return f"by {lead.margin * 100:.0f}% over {lead.runner_up}"


def _ties(found: list[Lead]) -> str:
    tied = [str(lead.concurrency) for lead in found if lead.tie]
    return f" (within the spread of the runs at concurrency {', '.join(tied)})" if tied else ""


def crossovers(cells: pd.DataFrame) -> dict[str, str]:
    """profile -> its sentence, for every profile with serving sweeps in two or more layouts."""
    if cells.empty or "layout" not in cells:
        return {}
    ok = cells[(cells["kind"] == "serving") & (cells["metric"] == METRIC) & (cells["status"] == "ok")
               & cells["mean"].notna() & cells["layout"].notna() & (cells["layout"] != "")]
    out = {}
    for profile, points in ok.groupby("profile", sort=True):
        # Only runs of the same reply length are compared (two suites may differ in it).
        by_tg = list(points.groupby(points["tg"].fillna(-1), sort=True))
        texts = [sentence(f"{profile} (tg{int(tg)})" if len(by_tg) > 1 else str(profile), leads(part))
                 for tg, part in by_tg]
        if any(texts):
            out[str(profile)] = " ".join(t for t in texts if t)
    return out

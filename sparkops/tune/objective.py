"""What makes one candidate better than another: the objective, the SLOs, and the rule that
says when a lead is real. Pure: reads sweep results (the same documents `inv bench` writes).

  throughput  the highest output tok/s over the workload's concurrencies whose p99s meet every
              SLO (the cell's own spread over its runs goes with it);
  latency     one user's decode rate: tg t/s at concurrency 1 (TTFT must meet the SLOs);
  goodput     the highest concurrency at which every SLO holds (tune finds it by bisection
              over the workload's concurrencies, as vLLM's serve_sla does).

SLOs: "p99_itl_ms<=30,p99_ttft_ms<=5000": any latency figure of a cell's pooled metrics
(p50/p90/p95/p99 of ttft, tpot, itl, e2el, in ms), each an upper bound.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sparkops.base.errors import SparkopsError

OBJECTIVES = ("throughput", "latency", "goodput")
SLO_RE = re.compile(r"^(median|p50|p90|p95|p99|mean)_(ttft|tpot|itl|e2el)_ms\s*<=\s*([0-9]+(?:\.[0-9]+)?)$")


@dataclass(frozen=True)
class Slo:
    metric: str  # a key of a cell's pooled metrics, e.g. p99_itl_ms
    limit: float

    def __str__(self) -> str:
        return f"{self.metric}<={self.limit:g}"


@dataclass(frozen=True)
class Score:
    """A candidate's figure under the objective: mean and std over the cell's runs (goodput: a
    concurrency, std 0). `value` None: no cell met the SLOs (or none ran)."""
    value: float | None
    std: float
    unit: str
    detail: str  # which cell gave it, and how the SLOs stood

    def text(self) -> str:
        if self.value is None:
            return f"no figure ({self.detail})"
        return f"{self.value:.1f} ± {self.std:.1f} {self.unit} ({self.detail})"


def parse_slos(text: str | None) -> list[Slo]:
    if not text:
        return []
    out = []
    for part in (p.strip() for p in text.split(",")):
        m = SLO_RE.match(part)
        if not m:
            raise SparkopsError(f"--slo {part!r}: not an SLO", step="tune",
                                fix='e.g. --slo "p99_itl_ms<=30,p99_ttft_ms<=5000" (p50/p90/p95/p99/mean/median '
                                    "of ttft, tpot, itl or e2el, in ms)")
        stat = "median" if m.group(1) == "p50" else m.group(1)
        out.append(Slo(f"{stat}_{m.group(2)}_ms", float(m.group(3))))
    return out


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise SparkopsError(f"--objective {objective!r}: one of {', '.join(OBJECTIVES)}", step="tune")
    return objective


def slo_misses(cell: dict, slos: list[Slo]) -> list[str]:
    """The SLOs a measured cell misses, each with its figure; a figure the cell lacks is a miss."""
    metrics = cell.get("metrics") or {}
    out = []
    for slo in slos:
        v = metrics.get(slo.metric)
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            out.append(f"{slo.metric} not measured")
        elif v > slo.limit:
            out.append(f"{slo.metric} {v:.1f} > {slo.limit:g}")
    return out


def _stat(cell: dict, key: str) -> tuple[float, float] | None:
    for group in ("spread", "benchy"):
        s = (cell.get(group) or {}).get(key)
        if isinstance(s, dict) and isinstance(s.get("mean"), (int, float)):
            return float(s["mean"]), float(s.get("std") or 0.0)
    return None


def score(docs: list[dict], objective: str, slos: list[Slo]) -> Score:
    """The candidate's score from its result documents (one sweep; goodput: one per probe)."""
    cells = [c for d in docs for c in d.get("cells") or [] if c.get("status") == "ok"]
    if not cells:
        return Score(None, 0.0, "", "no cell succeeded")
    if objective == "goodput":
        return goodput_score(cells, slos)
    if objective == "latency":
        singles = [c for c in cells if c["concurrency"] == 1]
        if not singles:
            return Score(None, 0.0, "tok/s", "the workload has no concurrency-1 cell")
        c = singles[0]
        misses = slo_misses(c, slos)
        if misses:
            return Score(None, 0.0, "tok/s", f"c1 misses {'; '.join(misses)}")
        tg = _stat(c, "tg_throughput") or _tpot_rate(c)
        if tg is None:
            return Score(None, 0.0, "tok/s", "no decode figure at c1")
        ttft = (c.get("metrics") or {}).get("median_ttft_ms")
        return Score(tg[0], tg[1], "tok/s", f"one user, {c['id']}" + (f", TTFT {ttft:.0f} ms" if ttft else ""))
    best: tuple[float, float, str] | None = None
    missed: list[str] = []
    for c in cells:
        misses = slo_misses(c, slos)
        if misses:
            missed.append(f"c{c['concurrency']}: {misses[0]}")
            continue
        out = _stat(c, "output_throughput")
        if out and (best is None or out[0] > best[0]):
            best = (out[0], out[1], c["id"])
    if best is None:
        return Score(None, 0.0, "tok/s", "no cell meets the SLOs: " + "; ".join(missed[:3]))
    return Score(best[0], best[1], "tok/s", f"at {best[2]}" + (f"; over SLO: {', '.join(missed)}" if missed else ""))


def _tpot_rate(cell: dict) -> tuple[float, float] | None:
    """One stream's decode rate from its TPOT (a serving cell at c1): 1000 / TPOT, its std by
    first-order propagation."""
    s = _stat(cell, "median_tpot_ms")
    if not s or s[0] <= 0:
        return None
    return 1000 / s[0], 1000 * s[1] / s[0] ** 2


def goodput_score(cells: list[dict], slos: list[Slo]) -> Score:
    meeting = sorted(c["concurrency"] for c in cells if not slo_misses(c, slos))
    if not meeting:
        return Score(None, 0.0, "streams", "no concurrency meets the SLOs")
    return Score(float(meeting[-1]), 0.0, "streams", f"every SLO holds up to c{meeting[-1]}")


def beats(challenger: Score, incumbent: Score) -> bool:
    """A lead counts only beyond both spreads: the challenger's mean minus its std above the
    incumbent's mean plus its std (goodput: a higher concurrency). A tie keeps the incumbent:
    the profile's own value, or the one found first. A candidate with no figure never wins;
    any figure beats none."""
    if challenger.value is None:
        return False
    if incumbent.value is None:
        return True
    return challenger.value - challenger.std > incumbent.value + incumbent.std


def gain(new: Score, old: Score) -> dict | None:
    """The winner's gain over the starting settings, in % with its spread (first-order)."""
    if new.value is None or old.value is None or old.value <= 0:
        return None
    ratio = new.value / old.value
    rel = math.hypot(new.std / new.value if new.value else 0.0, old.std / old.value)
    return {"percent": round((ratio - 1) * 100, 1), "std_percent": round(ratio * rel * 100, 1)}


def bisection_order(levels: list[int], meets) -> list[int]:
    """The concurrencies goodput probes, lowest first then halving the rest: `meets(c)` answers
    for a measured level (True, False) or None when it is not measured yet; returns the levels
    probed so far plus the next to probe (the last item), or all probed when the search is done.
    Assumes a level that misses an SLO is not followed by one that meets it (load only adds
    latency)."""
    lo, hi = 0, len(levels) - 1  # the answer lies in levels[lo..hi] (or below lo: none)
    probed: list[int] = []
    # the lowest level first: if it misses, nothing higher can meet
    first = meets(levels[0])
    probed.append(levels[0])
    if first is None or first is False:
        return probed
    lo = 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        result = meets(levels[mid])
        probed.append(levels[mid])
        if result is None:
            return probed
        if result:
            lo = mid
        else:
            hi = mid - 1
    return probed

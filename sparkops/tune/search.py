"""How `inv tune` walks the search space: coordinate descent from the profile's own settings.
Pure: the next trial is a function of the space, the start and the trials measured so far, so
a run that stopped (Ctrl-C, a lost node) resumes by replaying its record: nothing is measured
twice and the same decisions come out.

One setting at a time, in the order given, round and round: every other value of that setting
(the profile's own included) is tried with the others held at the incumbent's, and the best that
beats the incumbent beyond both spreads (objective.beats) becomes the incumbent. The search ends
when every setting has been walked once more since the last change with nothing changing (at
most MAX_ROUNDS rounds). A search over 5 x 2 x 2 values takes 1 + 4 + 1 + 1 = 7 trials when only
the first setting changes (the full grid: 20), 12 when the last one changes too (the first two
are then tried again beside it: 4 + 1 more).

Why not the grid: each trial is a restart of vLLM (minutes on a Spark, CUDA graphs captured
anew); settings such as max_num_seqs, the KV cache dtype and CUDA graphs mostly act on their
own, and where they do not, the second pass sees it. Why not halving by a short run first: a
short run on a Spark is dominated by warm-up and the spread of a few requests, which is where
a wrong cut is made; one full measurement per trial keeps every decision at the same precision.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from sparkops.tune.objective import Score, beats
from sparkops.tune.space import Dimension, describe, show

MAX_ROUNDS = 3  # walks of every setting: a cap on trials where settings keep trading places


@dataclass(frozen=True)
class Trial:
    candidate: dict
    status: str  # ok (measured), infeasible (did not start or load), failed (started, measuring failed)
    score: Score
    reason: str | None = None

    @classmethod
    def from_entry(cls, entry: dict) -> Trial:
        """A trial as a summary.json records it (what --resume and a replay read)."""
        return cls(entry["candidate"], entry["status"], Score(**entry["score"]), entry.get("reason"))


@dataclass
class Step:
    """What to do next: measure `candidate`, or (candidate None) the search is over."""
    candidate: dict | None
    incumbent: dict
    decisions: list[str] = field(default_factory=list)


def key(candidate: dict) -> str:
    return json.dumps(candidate, sort_keys=True)


def grid_size(dims: list[Dimension], start: dict) -> int:
    """The full grid's trials (each value of each setting, the start's own counted once)."""
    n = 1
    for d in dims:
        n *= len(set(map(show, d.values)) | {show(start.get(d.key))})
    return n


def next_step(dims: list[Dimension], start: dict, trials: dict[str, Trial]) -> Step:
    incumbent = dict(start)
    if key(incumbent) not in trials:
        return Step(incumbent, incumbent)
    decisions: list[str] = []
    inc = trials[key(incumbent)]
    if inc.status != "ok":
        decisions.append(f"the starting settings ({describe(start)}) did not run: {inc.reason}; the first "
                         "candidate that does becomes the incumbent")
    quiet, walks = 0, 0  # settings walked in a row with nothing changing; walks made
    while quiet < len(dims) and walks < MAX_ROUNDS * len(dims):
        dim = dims[walks % len(dims)]
        values = list(dim.values) + ([start.get(dim.key)] if show(start.get(dim.key)) not in map(show, dim.values)
                                     else [])
        options = [v for v in values if show(v) != show(incumbent.get(dim.key))]
        for v in options:
            cand = incumbent | {dim.key: v}
            if key(cand) not in trials:
                return Step(cand, incumbent, decisions)
        best, best_trial = None, None
        lines = [f"{dim.label(incumbent.get(dim.key))} (incumbent): {_said(trials[key(incumbent)])}"]
        for v in options:
            t = trials[key(incumbent | {dim.key: v})]
            lines.append(f"{dim.label(v)}: {_said(t)}")
            if t.status == "ok" and beats(t.score, trials[key(incumbent)].score) and (
                    best_trial is None or (t.score.value or 0) > (best_trial.score.value or 0)):
                best, best_trial = v, t
        if best is None:
            verdict = f"keep {dim.label(incumbent.get(dim.key))}: no other value leads beyond the spread"
            quiet += 1
        else:
            verdict = f"take {dim.label(best)}: it leads beyond both spreads"
            incumbent = incumbent | {dim.key: best}
            quiet = 1  # this setting is settled beside the others; each other must be walked again
        walks += 1
        decisions.append(f"round {(walks - 1) // len(dims) + 1}, {dim.key}: " + "; ".join(lines) + f" -> {verdict}")
    return Step(None, incumbent, decisions)


def grid_values(dim: Dimension, start: dict) -> int:
    return len(set(map(show, dim.values)) | {show(start.get(dim.key))})


def _said(t: Trial) -> str:
    if t.status == "ok":
        return t.score.text()
    return f"{t.status.upper()} ({t.reason})"

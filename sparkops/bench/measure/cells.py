"""What a sweep measures: its cells, from llama-benchy-style flags or a named suite.

Two kinds of sweep:
  depth    llama-benchy's test grid: every (pp, tg, depth, concurrency); a run is `concurrency`
           requests of depth + pp prompt tokens and tg output tokens, sent at once;
  serving  the shared prompt set at each concurrency level (the throughput-latency curve); a run
           is max(min_prompts, prompts_per_stream x concurrency) prompts, at most `concurrency`
           in flight.
Every cell gets a warm-up run, then `runs` measured runs. Pure: no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sparkops.base.errors import SparkopsError

KINDS = ("depth", "serving")
LATENCY_MODES = ("api", "generation", "none")


@dataclass(frozen=True)
class Cell:
    tg: int
    concurrency: int
    requests: int  # per run
    pp: int | None = None  # None in a serving sweep
    depth: int | None = None

    @property
    def id(self) -> str:
        if self.pp is None:
            return f"serving_tg{self.tg}_c{self.concurrency}"
        return f"pp{self.pp}_tg{self.tg}_d{self.depth}_c{self.concurrency}"

    @property
    def prompt_tokens(self) -> int | None:
        return None if self.pp is None else self.pp + (self.depth or 0)

    def too_long(self, max_model_len: int | None) -> str | None:
        """Why the server would refuse this cell's requests, or None."""
        if max_model_len is None or self.pp is None:
            return None
        need = self.pp + (self.depth or 0) + self.tg
        if need > max_model_len:
            return (f"needs {need} tokens (depth {self.depth} + pp {self.pp} + tg {self.tg}), "
                    f"max_model_len is {max_model_len}")
        return None


@dataclass(frozen=True)
class SweepPlan:
    kind: str
    cells: tuple[Cell, ...]
    runs: int
    latency_mode: str = "api"
    prefix_caching: bool = False
    suite: str | None = None
    dataset: str | None = None  # serving sweeps: the prompt set
    notes: tuple[str, ...] = field(default=())

    def key_fields(self) -> dict:
        """What makes two sweeps comparable (and resumable into one another)."""
        return {"kind": self.kind, "cells": [c.id for c in self.cells], "runs": self.runs,
                "latency_mode": self.latency_mode, "prefix_caching": self.prefix_caching,
                "suite": self.suite, "dataset": self.dataset}


def int_list(value, what: str) -> list[int]:
    """'512,2048' (or a list, or one int) -> [512, 2048]; anything else is a user error."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    out = []
    for item in items:
        text = str(item).strip().lower()
        mult = 1024 if text.endswith("k") else 1
        try:
            n = int(text[:-1] if mult > 1 else text) * mult
        except ValueError:
            raise SparkopsError(f"--{what} {value!r}: {item!r} is not a whole number", step="bench",
                                fix=f"a comma list, e.g. --{what} 0,4096,16k") from None
        if n < (0 if what == "depth" else 1):
            raise SparkopsError(f"--{what} {value!r}: {n} is too small", step="bench")
        if n not in out:
            out.append(n)
    if not out:
        raise SparkopsError(f"--{what} is empty", step="bench")
    return out


def depth_plan(*, pp, tg, depth, concurrency, runs: int, latency_mode: str = "api",
               prefix_caching: bool = False, suite: str | None = None) -> SweepPlan:
    pps, tgs = int_list(pp, "pp"), int_list(tg, "tg")
    depths, levels = int_list(depth, "depth"), int_list(concurrency, "concurrency")
    _check(runs, latency_mode)
    # llama-benchy's loop order: depth, pp, tg, concurrency.
    cells = tuple(Cell(tg=t, concurrency=c, requests=c, pp=p, depth=d)
                  for d in depths for p in pps for t in tgs for c in levels)
    return SweepPlan("depth", cells, runs, latency_mode, prefix_caching, suite)


def serving_plan(*, concurrency, max_tokens: int, runs: int, dataset: str, prompts_per_stream: int = 2,
                 min_prompts: int = 16, max_prompts: int | None = None, latency_mode: str = "api",
                 suite: str | None = None) -> SweepPlan:
    _check(runs, latency_mode)
    cells = []
    for c in int_list(concurrency, "concurrency"):
        n = max(min_prompts, prompts_per_stream * c)
        cells.append(Cell(tg=int(max_tokens), concurrency=c, requests=min(n, max_prompts) if max_prompts else n))
    return SweepPlan("serving", tuple(cells), runs, latency_mode, False, suite, dataset)


def suite_plan(name: str, bench_cfg: dict, *, runs: int | None = None, latency_mode: str | None = None,
               prefix_caching: bool | None = None) -> SweepPlan:
    """A named suite from the configuration ([bench.suites.NAME]); flags given override it."""
    suites = bench_cfg.get("suites") or {}
    if name not in suites:
        raise SparkopsError(f"no benchmark suite {name!r}", step="bench",
                            fix=f"one of {', '.join(sorted(suites)) or '(none configured)'}, "
                                "or add [bench.suites.NAME] to the profile")
    s = suites[name]
    runs = int(runs or s.get("runs", 3))
    latency = latency_mode or s.get("latency_mode", "api")
    if s.get("kind", "depth") == "serving":
        return serving_plan(concurrency=s["concurrency"], max_tokens=s.get("max_tokens", bench_cfg["max_tokens"]),
                            runs=runs, dataset=s.get("dataset", bench_cfg["dataset"]),
                            prompts_per_stream=s.get("prompts_per_stream", 2), min_prompts=s.get("min_prompts", 16),
                            max_prompts=s.get("max_prompts"), latency_mode=latency, suite=name)
    return depth_plan(pp=s.get("pp", [2048]), tg=s.get("tg", [32]), depth=s.get("depth", [0]),
                      concurrency=s.get("concurrency", [1]), runs=runs, latency_mode=latency,
                      prefix_caching=bool(s.get("prefix_caching", False) if prefix_caching is None
                                          else prefix_caching), suite=name)


def _check(runs: int, latency_mode: str) -> None:
    if runs < 1:
        raise SparkopsError(f"--runs must be at least 1, not {runs}", step="bench")
    if latency_mode not in LATENCY_MODES:
        raise SparkopsError(f"--latency-mode {latency_mode!r}: one of {', '.join(LATENCY_MODES)}", step="bench")

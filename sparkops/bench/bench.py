"""The `inv bench` verb: flags -> target -> engine run or sweep -> result file -> summary."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from sparkops.base.errors import SparkopsError
from sparkops.base.paths import project_root, results_dir
from sparkops.base.progress import Progress
from sparkops.bench.engines import pick_mode, render, run_engine, save, settings_for
from sparkops.bench.load.target import open_target
from sparkops.bench.measure.cells import SweepPlan, depth_plan, suite_plan
from sparkops.bench.measure.sweep import render_sweep, run_sweep
from sparkops.config import Config, defaults_layer, load_config
from sparkops.config.stack import Stack, load_stack


def bench(*, profile: str | None, url: str | None, cluster: str | None, single: bool, quick: bool,
          num_prompts: int | None, concurrency: str | None, dataset: str | None, max_tokens: int | None,
          output: str | None, engine: str, ignore_eos: bool, sets: list[str], results: str | None = None,
          pp: str | None = None, tg: str | None = None, depth: str | None = None, runs: int | None = None,
          suite: str | None = None, latency_mode: str | None = None, prefix_caching: bool = False,
          resume: bool = False, out: TextIO | None = None, progress: Progress | None = None) -> tuple[dict, Path]:
    sink = out or sys.stdout
    progress = progress or Progress()
    sweep = suite is not None or any(v is not None for v in (pp, tg, depth))
    if sweep and (single or quick or num_prompts is not None):
        raise SparkopsError("a sweep (--pp/--tg/--depth or --suite) is not also --single, --quick or -n",
                            step="bench", fix="leave out the mode flags; --runs sets the repetitions")
    if sweep and engine != "sparkops":
        raise SparkopsError("sweeps run with the sparkops engine only", step="bench",
                            fix="leave out --engine, or bench `vllm bench serve` without a sweep")
    if not sweep and (concurrency is not None and "," in str(concurrency)):
        raise SparkopsError(f"-c {concurrency}: a list of concurrency levels needs a sweep", step="bench",
                            fix="add --pp/--tg/--depth (llama-benchy's test), or --suite serving")
    mode = "sweep" if sweep else pick_mode(single, quick, num_prompts, concurrency)

    def load(name: str, overrides=()) -> Config:
        return load_config(name, cluster, sets=[*overrides, *sets])

    def stack_of(name: str) -> Stack:  # a deployed stack: bench.load.target picks one of its models
        return load_stack(name, cluster, sets=sets)

    # --url alone benches that URL without touching the cluster; the vllm engine always runs on
    # the head, so it needs the cluster.
    use_cluster = url is None or cluster is not None or engine == "vllm"
    cluster_cfg = load_config("smoke", cluster, sets=sets) if use_cluster else None
    folder = Path(results) if results else results_dir(project_root())
    with open_target(load, cluster_cfg, profile=profile, url=url, need_head=engine == "vllm",
                     load_stack=stack_of) as target:
        bench_cfg = target.cfg.doc["bench"] if target.cfg else _defaults()
        if sweep:
            plan = _plan(bench_cfg, suite=suite, pp=pp, tg=tg, depth=depth, concurrency=concurrency, runs=runs,
                         latency_mode=latency_mode, prefix_caching=prefix_caching)
            progress.say(f"benchmarking {target.model} at {target.url}: {len(plan.cells)} cells "
                         f"({plan.kind}{', suite ' + plan.suite if plan.suite else ''}), {plan.runs} runs each "
                         "after a warm-up")
            doc, path = run_sweep(target, plan, bench_cfg, results=folder, progress=progress, resume=resume,
                                  output=Path(output) if output else None)
            print(render_sweep(doc, path), file=sink)
            return doc, path
        settings = settings_for(mode, bench_cfg, num_prompts=num_prompts,
                                concurrency=int(concurrency) if concurrency else None,
                                dataset=dataset, max_tokens=max_tokens, ignore_eos=ignore_eos, runs=runs)
        progress.say(f"benchmarking {target.model} at {target.url}: {mode}, {settings['num_prompts']} "
                     f"prompts from {settings['dataset']}, concurrency {settings['concurrency']}, "
                     f"max_tokens {settings['max_tokens']}, engine {engine}")
        doc = run_engine(target, mode, settings, engine, progress)
    path = save(doc, folder, Path(output) if output else None)
    print(render(doc, path), file=sink)
    return doc, path


def _plan(bench_cfg: dict, *, suite, pp, tg, depth, concurrency, runs, latency_mode, prefix_caching) -> SweepPlan:
    if suite is not None:
        if any(v is not None for v in (pp, tg, depth, concurrency)):
            raise SparkopsError(f"--suite {suite} sets its own cells", step="bench",
                                fix="leave out --pp/--tg/--depth/--concurrency, or give them without --suite")
        return suite_plan(suite, bench_cfg, runs=runs, latency_mode=latency_mode,
                          prefix_caching=prefix_caching or None)
    # llama-benchy's defaults for what is not given: pp 2048, tg 32, depth 0, concurrency 1, 3 runs.
    return depth_plan(pp=pp or "2048", tg=tg or "32", depth=depth or "0", concurrency=concurrency or "1",
                      runs=runs or 3, latency_mode=latency_mode or "api", prefix_caching=prefix_caching)


def _defaults() -> dict:
    return dict(defaults_layer().data["bench"])

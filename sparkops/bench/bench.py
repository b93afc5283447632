"""The `inv bench` verb: flags -> target -> engine run -> result file -> summary."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from sparkops.base.paths import project_root, results_dir
from sparkops.base.progress import Progress
from sparkops.bench.engines import pick_mode, render, run_engine, save, settings_for
from sparkops.bench.target import open_target
from sparkops.config import Config, defaults_layer, load_config


def bench(*, profile: str | None, url: str | None, cluster: str | None, single: bool, quick: bool,
          num_prompts: int | None, concurrency: int | None, dataset: str | None, max_tokens: int | None,
          output: str | None, engine: str, ignore_eos: bool, sets: list[str], results: str | None = None,
          out: TextIO | None = None, progress: Progress | None = None) -> tuple[dict, Path]:
    sink = out or sys.stdout
    progress = progress or Progress()
    mode = pick_mode(single, quick, num_prompts, concurrency)

    def load(name: str) -> Config:
        return load_config(name, cluster, sets=sets)

    # --url alone benches that URL without touching the cluster; the vllm engine always runs on
    # the head, so it needs the cluster.
    use_cluster = url is None or cluster is not None or engine == "vllm"
    cluster_cfg = load_config("smoke", cluster, sets=sets) if use_cluster else None
    with open_target(load, cluster_cfg, profile=profile, url=url, need_head=engine == "vllm") as target:
        bench_cfg = target.cfg.doc["bench"] if target.cfg else _defaults()
        settings = settings_for(mode, bench_cfg, num_prompts=num_prompts, concurrency=concurrency,
                                dataset=dataset, max_tokens=max_tokens, ignore_eos=ignore_eos)
        progress.say(f"benchmarking {target.model} at {target.url}: {mode}, {settings['num_prompts']} "
                     f"prompts from {settings['dataset']}, concurrency {settings['concurrency']}, "
                     f"max_tokens {settings['max_tokens']}, engine {engine}")
        doc = run_engine(target, mode, settings, engine, progress)
    folder = Path(results) if results else results_dir(project_root())
    path = save(doc, folder, Path(output) if output else None)
    print(render(doc, path), file=sink)
    return doc, path


def _defaults() -> dict:
    return dict(defaults_layer().data["bench"])

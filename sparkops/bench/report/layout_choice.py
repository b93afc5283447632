"""`inv plan`'s layouts section: which layouts of a profile fit this cluster, and, where the
results folder holds serving sweeps of the profile in two or more layouts, which one was
fastest at which concurrency (the report's sentence)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sparkops.base.errors import SparkopsError
from sparkops.bench.report.crossover import crossovers
from sparkops.bench.report.report import sweep_tables
from sparkops.bench.results.files import load_results
from sparkops.config import Config
from sparkops.config.layouts import LAYOUTS, describe, layout_of, layout_sets, needs
from sparkops.config.memfit import estimate


def layout_lines(cfg: Config, loader: Callable[..., Config], sets: list[str], results: Path,
                 memory_of: Callable[[dict], float | None] | None = None) -> list[str]:
    """`memory_of(doc)`: what one node offers vLLM in that layout, from the nodes' facts (None:
    the cluster file's static figure)."""
    nodes, gpn = len(cfg.nodes), cfg.cluster.get("gpus_per_node", 1)
    current = layout_of(cfg.doc)
    out = [f"layouts of {cfg.profile} on {cfg.cluster_name} ({nodes} node(s) of {gpn} GPU(s)):"]
    fitting = []
    for layout in LAYOUTS:
        if why := needs(layout, nodes, gpn):
            out.append(f"  {layout:<8} {why}")
            continue
        try:
            alt = loader(cfg.profile, cfg.cluster_name, sets=[*sets, *layout_sets(layout, nodes, gpn)],
                         **({"facts_follow": True} if memory_of else {}))
        except SparkopsError as exc:
            why = next((d for d in exc.details if d.startswith("error")), exc.message).splitlines()[0]
            out.append(f"  {layout:<8} does not fit: {why.removeprefix('error: ').removeprefix('serving: ')}")
            continue
        fit = estimate(alt.doc, memory_of(alt.doc) if memory_of else None)
        if fit.verdict == "does-not-fit":
            out.append(f"  {layout:<8} does not fit: the model does not fit: {fit.reason}")
            continue
        fitting.append(layout)
        mark = "  <- this profile as configured" if layout == current else ""
        out.append(f"  {layout:<8} {describe(alt.doc):<20} {fit.verdict}: {fit.reason}{mark}")
    found = [(p, d) for p, d in (load_results(results)[0] if results.is_dir() else [])
             if d["mode"] == "sweep" and d["provenance"].get("profile") == cfg.profile]
    said = crossovers(sweep_tables(found)[1]).get(cfg.profile) if found else None
    if said:
        out.append(f"  measured: {said}")
    elif len(fitting) > 1:
        out.append(f"  which is fastest is not measured here yet: inv bench-all --profiles {cfg.profile} "
                   f"--layouts {','.join(fitting)}, then inv report")
    return out

"""The report's charts (PNG, matplotlib's Agg backend: no display needed).

One axis never mixes units or bench modes: the classic charts have one panel per mode and one
figure per unit; the sweep charts have one metric per axis (TTFT p50 and p99 share one, both
ms of the same cells). A chart is written only when some result has data for it.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from sparkops.base.errors import SparkopsError
from sparkops.config.weights import SPEED_ONLY

# (file, title, y label, [(classic matrix column, legend label)])
CLASSIC_CHARTS = [
    ("throughput.png", "Token throughput (higher is better)", "tokens/s",
     [("output_tok_s", "output tok/s"), ("total_tok_s", "total tok/s")]),
    ("requests.png", "Request throughput (higher is better)", "requests/s", [("req_s", "requests/s")]),
    ("latency.png", "Latency, median (lower is better)", "ms",
     [("median_ttft_ms", "TTFT"), ("median_tpot_ms", "TPOT"), ("median_itl_ms", "ITL")]),
    ("e2el.png", "End-to-end latency (lower is better)", "ms",
     [("median_e2el_ms", "median E2EL"), ("p99_e2el_ms", "p99 E2EL")]),
]
DEPTH_CHARTS = [("depth-pp.png", "pp", "Prompt processing against context depth (higher is better)"),
                ("depth-tg.png", "tg", "Token generation against context depth (higher is better)")]


def depth_label(depth: int) -> str:
    """llama-benchy's depths are powers of two: 4096 -> "d4k"; other values stay whole."""
    for unit in (1024, 1000):
        if depth and depth % unit == 0:
            return f"d{depth // unit}k"
    return f"d{depth}"


def pyplot() -> Any:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SparkopsError("charts need matplotlib", step="report", fix="pip install -e '.[charts]'") from None
    return plt


def save(fig: Any, path: Path) -> Path:
    plt = pyplot()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- classic modes (single, quick, full, custom) ----------------------------------------------

def classic_charts(df: pd.DataFrame, out: Path) -> list[Path]:
    """Bar charts of the classic matrix: one figure per unit, one panel per mode."""
    written = []
    for name, title, unit, series in CLASSIC_CHARTS:
        cols = [c for c, _ in series]
        modes = [m for m in modes_of(df) if df.loc[df["mode"] == m, cols].notna().any().any()]
        if modes:
            written.append(classic_chart(df, modes, out / name, title, unit, series))
    return written


def modes_of(df: pd.DataFrame) -> list[str]:
    """The modes present, in the order of their size (single, quick, full, custom)."""
    order = ["single", "quick", "full", "custom"]
    return sorted(set(df["mode"]), key=lambda m: (order.index(m) if m in order else len(order), str(m)))


def classic_chart(df: pd.DataFrame, modes: list[str], path: Path, title: str, unit: str,
                  series: list[tuple[str, str]]) -> Path:
    plt = pyplot()
    widest = max(int((df["mode"] == m).sum()) for m in modes)
    fig, axes = plt.subplots(len(modes), 1, figsize=(max(6, 1.4 * widest + 2), 3.8 * len(modes)), squeeze=False)
    for ax, mode in zip(axes[:, 0], modes):
        bars(ax, df[df["mode"] == mode], series)
        ax.set_title(f"{title}: {mode}", fontsize=10)
        ax.set_ylabel(unit)
    return save(fig, path)


def bars(ax: Any, rows: pd.DataFrame, series: list[tuple[str, str]]) -> None:
    width = 0.8 / len(series)
    for k, (col, label) in enumerate(series):
        vals = [0 if pd.isna(v) else float(v) for v in rows[col]]
        ax.bar([i + k * width for i in range(len(rows))], vals, width, label=label)
    middle = [i + 0.4 - width / 2 for i in range(len(rows))]
    top = ax.get_ylim()[1]
    for x, status in zip(middle, rows["status"]):
        if status != "ok":  # a failed or skipped profile keeps its place, marked, not a zero bar
            ax.text(x, top * 0.02, str(status).upper(), rotation=90, ha="center", va="bottom",
                    color="crimson", fontsize=9)
    random = [getattr(r, "weights", None) == SPEED_ONLY for r in rows.itertuples()]
    ax.set_xticks(middle, [f"{r.profile}\n{r.engine}" + ("\nrandom weights" if dummy else "")
                           for r, dummy in zip(rows.itertuples(), random)], fontsize=7)
    ax.legend(fontsize=8)


# --- sweeps ------------------------------------------------------------------------------------

def sweep_charts(cells: pd.DataFrame, out: Path) -> list[Path]:
    """Line charts of the sweep cells (the report's tidy table: one row per profile, cell and
    metric, with mean and std)."""
    if cells.empty:
        return []
    ok = cells[(cells["status"] == "ok") & cells["mean"].notna()]
    written = []
    for name, metric, title in DEPTH_CHARTS:
        points = ok[(ok["kind"] == "depth") & (ok["metric"] == metric)]
        if not points.empty:
            written.append(depth_chart(points, metric, out / name, title))
    serving = ok[ok["kind"] == "serving"]
    out_tok = serving[serving["metric"] == "out_tok_s"]
    if not out_tok.empty:
        written.append(concurrency_chart(out_tok, out / "serving-throughput.png",
                                         "Output throughput against concurrency (higher is better)", "tokens/s"))
    ttft = serving[serving["metric"].isin(["ttft_p50_ms", "ttft_p99_ms"])]
    if not ttft.empty:
        written.append(concurrency_chart(ttft, out / "serving-ttft.png",
                                         "TTFT p50 (solid) and p99 (dashed) against concurrency (lower is better)",
                                         "ms"))
    return written


def depth_chart(points: pd.DataFrame, metric: str, path: Path, title: str) -> Path:
    """t/s against depth, a line per profile and pp (or tg) value; error bars are the std over
    the runs. Depth cells at concurrency > 1 are lines of their own, labelled cN."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    other = "tg" if metric == "pp" else "pp"
    keys = ["label", metric, other, "concurrency"]
    groups = list(points.groupby(keys, sort=True))
    for key, line in groups:
        line = line.sort_values("depth")
        ax.errorbar(floats(line["depth"]), floats(line["mean"]), yerr=floats(line["std"]), marker="o", capsize=3,
                    label=line_label(dict(zip(keys, key)), metric, other, [g for g, _ in groups]))
    depths = sorted(points["depth"].unique())
    ax.set_xticks(depths, [depth_label(int(d)) for d in depths])
    ax.set_xlabel("context depth (tokens)")
    ax.set_ylabel(f"{metric} tokens/s")
    finish(ax, title)
    return save(fig, path)


def line_label(key: dict, metric: str, other: str, all_keys: Sequence[tuple]) -> str:
    """"profile tg32", with pp (or tg) and cN only when needed to tell lines apart."""
    label = f"{key['label']} {metric}{key[metric]}"
    same = [k for k in all_keys if (k[0], k[1], k[3]) == (key["label"], key[metric], key["concurrency"])]
    if len(same) > 1:
        label += f" {other}{key[other]}"
    return label + (f" c{key['concurrency']}" if key["concurrency"] != 1 else "")


def concurrency_chart(points: pd.DataFrame, path: Path, title: str, unit: str) -> Path:
    """A metric against concurrency on a log2 axis, a line per profile (and per max_tokens when
    a profile has several); error bars are the std over the runs."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    colors: dict[str, Any] = {}
    several_tg = points.groupby("label")["tg"].nunique() > 1
    for (row, tg, metric), line in points.groupby(["label", "tg", "metric"], sort=True):
        line = line.sort_values("concurrency")
        label = f"{row} tg{tg}" if several_tg[row] else str(row)
        color = colors.get(label)
        drawn = ax.errorbar(floats(line["concurrency"]), floats(line["mean"]), yerr=floats(line["std"]),
                            marker="o", capsize=3,
                            color=color, linestyle="--" if metric == "ttft_p99_ms" else "-",
                            label=label if color is None else None)
        colors.setdefault(label, drawn.lines[0].get_color())  # p50 and p99 of a profile: one color
    levels = sorted(points["concurrency"].unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(int(c)) for c in levels])
    ax.set_xlabel("concurrency (requests in flight)")
    ax.set_ylabel(unit)
    finish(ax, title)
    return save(fig, path)


def layout_charts(cells: pd.DataFrame, out: Path) -> list[Path]:
    """Per profile benched in two or more layouts: output throughput and TTFT p99 against
    concurrency, a line per layout (layouts-<profile>.png)."""
    if cells.empty:
        return []
    ok = cells[(cells["status"] == "ok") & cells["mean"].notna() & (cells["kind"] == "serving")
               & cells["layout"].notna() & (cells["layout"] != "")]
    written = []
    for profile, points in ok.groupby("profile", sort=True):
        if points["layout"].nunique() < 2:
            continue
        plt = pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
        for ax, metric, unit, title in ((axes[0], "out_tok_s", "tokens/s", "output throughput (higher is better)"),
                                        (axes[1], "ttft_p99_ms", "ms", "TTFT p99 (lower is better)")):
            for layout, line in points[points["metric"] == metric].groupby("layout", sort=True):
                line = line.sort_values("concurrency")
                ax.errorbar(floats(line["concurrency"]), floats(line["mean"]), yerr=floats(line["std"]),
                            marker="o", capsize=3, label=str(layout))
            levels = sorted(points["concurrency"].unique())
            ax.set_xscale("log", base=2)
            ax.set_xticks(levels, [str(int(c)) for c in levels])
            ax.set_xlabel("concurrency (requests in flight)")
            ax.set_ylabel(unit)
            finish(ax, f"{profile}: {title}")
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(profile)).strip("._") or "profile"
        written.append(save(fig, out / f"layouts-{name}.png"))
    return written


def floats(values: pd.Series) -> list[float]:
    """Plain floats for matplotlib (the cells table has nullable integers); no std: 0."""
    return [0.0 if pd.isna(v) else float(v) for v in values]


def finish(ax: Any, title: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)

"""`inv report`: result files -> a comparison matrix (CSV, Markdown) and charts (PNG).

One row per profile, bench mode and engine (the newest result of each). Failed and skipped
profiles keep their row with the status and the reason; their metric cells are empty in the
CSV and "—" in Markdown, never a silent "N/A". Files that are not valid sparkops results are
skipped with a warning naming each one.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from sparkops.base.errors import SparkopsError
from sparkops.base.files import atomic_write
from sparkops.base.tables import markdown_cell, markdown_table
from sparkops.bench.metrics import STALL_WARN_MS
from sparkops.bench.results import load_results

# (column, where in a result document it comes from)
METRICS = [
    ("output_tok_s", ("metrics", "output_throughput")),
    ("total_tok_s", ("metrics", "total_token_throughput")),
    ("req_s", ("metrics", "request_throughput")),
    *[(f"{s}_{m}_ms", ("metrics", f"{s}_{m}_ms"))
      for m in ("ttft", "ttft_content", "tpot", "itl", "e2el") for s in ("mean", "median", "p99")],
    ("single_decode_tok_s", ("single", "decode_tok_s")),
    ("single_ttft_ms", ("single", "ttft_ms")),
    ("client_max_stall_ms", ("metrics", "client_max_stall_ms")),
]
COLUMNS = ["model", "profile", "cluster", "mode", "engine", "nodes", "tp", "pp", "status", "reason",
           "completed", "failed", *[c for c, _ in METRICS], "vllm_version", "config_hash", "date", "file"]
MODE_ORDER = {"single": 0, "quick": 1, "full": 2, "custom": 3}


def _get(doc: dict, path: tuple[str, str]):
    part = doc.get(path[0]) or {}
    v = part.get(path[1])
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def row(path: Path, doc: dict) -> dict:
    p, m = doc["provenance"], doc.get("metrics") or {}
    reason = doc.get("reason")
    if doc["status"] == "ok" and m.get("failed"):
        reason = f"{m['failed']} requests failed: " + "; ".join(m.get("errors", [])[:1])
    stall = m.get("client_max_stall_ms")
    if doc["status"] == "ok" and isinstance(stall, (int, float)) and stall >= STALL_WARN_MS:
        # An ok run the client could not keep up with: say so where the numbers are read.
        note = f"benchmark client held up {stall:.0f} ms (see the result's warnings)"
        reason = f"{reason}; {note}" if reason else note
    out = {"model": p.get("model") or p.get("served_model_name"), "profile": p.get("profile") or p.get("api_url"),
           "cluster": p.get("cluster"), "mode": doc["mode"], "engine": doc["engine"],
           "nodes": len(p.get("nodes") or []) or None, "tp": p.get("tensor_parallel"),
           "pp": p.get("pipeline_parallel"), "status": doc["status"], "reason": reason,
           "completed": m.get("completed"), "failed": m.get("failed"),
           "vllm_version": p.get("vllm_version"), "config_hash": p.get("config_hash"),
           "date": doc["created_at"], "file": path.name}
    for col, where in METRICS:
        out[col] = _get(doc, where)
    return out


def matrix(results: Path) -> tuple[pd.DataFrame, list[str]]:
    found, warnings = load_results(results)
    rows = [row(path, doc) for path, doc in found]
    df = pd.DataFrame(rows, columns=COLUMNS)
    if df.empty:
        return df, warnings
    df = (df.sort_values("date").groupby(["profile", "mode", "engine", "cluster"], dropna=False, sort=False)
          .tail(1))
    df = df.assign(_m=df["mode"].map(MODE_ORDER)).sort_values(["model", "profile", "_m", "engine"]).drop(columns="_m")
    for col in ("nodes", "tp", "pp", "completed", "failed"):
        df[col] = df[col].astype("Int64")
    return df.reset_index(drop=True), warnings


def to_markdown(df: pd.DataFrame) -> str:
    cols = ["model", "profile", "mode", "engine", "nodes", "tp", "status", "output_tok_s", "total_tok_s",
            "req_s", "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "median_ttft_content_ms",
            "mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms", "mean_itl_ms", "median_itl_ms", "p99_itl_ms",
            "mean_e2el_ms", "median_e2el_ms", "p99_e2el_ms", "single_decode_tok_s", "completed", "failed",
            "date", "reason"]

    rows = [{c: (str(r["status"]).upper() if c == "status" and r["status"] != "ok" else r[c]) for c in cols}
            for _, r in df.iterrows()]
    lines = [markdown_table(rows, cols, cell=_cell)]
    notes = ["", "Latencies in ms, throughputs per second of the run. TTFT/TPOT/ITL/E2EL follow "
             "`vllm bench serve`; `ttft_content` is TTFT to the first content token (sparkops engine "
             "only). `single_decode_tok_s` comes from the single-request run. Rows with status FAILED "
             "or SKIPPED give the reason in the last column; so does an ok row whose benchmark client "
             "was held up (its latencies or throughput may be off)."]
    return "\n".join(lines + notes) + "\n"


def _cell(v: object) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.2f}"
    return markdown_cell(v)


def charts(df: pd.DataFrame, out: Path) -> list[Path]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SparkopsError("charts need matplotlib", step="report",
                            fix="pip install -e '.[charts]'") from None
    if df.empty:
        return []
    labels = [f"{r.profile}\n{r.mode}/{r.engine}" for r in df.itertuples()]
    written = []
    specs = [("throughput.png", "Throughput (higher is better)", "tokens/s or requests/s",
              [("output_tok_s", "output tok/s"), ("total_tok_s", "total tok/s"), ("req_s", "requests/s")]),
             ("latency.png", "Latency, median (lower is better)", "ms",
              [("median_ttft_ms", "TTFT"), ("median_tpot_ms", "TPOT"), ("median_itl_ms", "ITL")]),
             ("e2el.png", "End-to-end latency (lower is better)", "ms",
              [("median_e2el_ms", "median E2EL"), ("p99_e2el_ms", "p99 E2EL")])]
    for name, title, unit, series in specs:
        fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(df) + 2), 4.5))
        width = 0.8 / len(series)
        for k, (col, label) in enumerate(series):
            vals = [0 if pd.isna(v) else float(v) for v in df[col]]
            ax.bar([i + k * width for i in range(len(df))], vals, width, label=label)
        top = ax.get_ylim()[1]
        for i, r in enumerate(df.itertuples()):
            if r.status != "ok":
                ax.text(i + 0.4 - width / 2, top * 0.02, r.status.upper(), rotation=90, ha="center",
                        va="bottom", color="crimson", fontsize=9)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(df))], labels, fontsize=7)
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def report(results: Path, out: Path) -> tuple[pd.DataFrame, list[Path], list[str]]:
    if not Path(results).is_dir():
        raise SparkopsError(f"no results folder {results}", step="report",
                            fix="run `inv bench` or `inv bench-all` first, or give --results DIR")
    df, warnings = matrix(results)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "matrix.csv", out / "matrix.md"
    atomic_write(csv_path, df.to_csv(index=False))
    atomic_write(md_path, to_markdown(df))
    return df, [csv_path, md_path, *charts(df, out)], warnings

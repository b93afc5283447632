"""`inv report`: result files -> comparison matrices (CSV, Markdown), charts (PNG) and one
self-contained index.html holding both matrices and every chart.

- matrix.csv / matrix.md, the classic modes (single, quick, full, custom): one row per profile,
  bench mode and engine (the newest result of each).
- compare.csv / compare.md, the sweeps: one row per profile (its newest depth sweep and newest
  serving sweep merged), plus one row per llama-benchy JSON file found in the results folder,
  in the columns the community posts (`pp2048 t/s @ d4k`, `tg32 t/s @ d0`, ...).

Failed and skipped profiles (and cells) keep their place with the status and the reason; their
metric cells are empty in the CSV and "—" in Markdown, never a silent "N/A". A result measured on
random weights (model.weights = "dummy") is a row of its own, its weights column says "speed only:
random weights", and so do its labels in the charts and the page's notes. Files that are
neither sparkops results nor llama-benchy JSON are skipped with a warning naming each one.
"""
from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from sparkops.base.errors import SparkopsError
from sparkops.base.files import atomic_write
from sparkops.base.tables import markdown_cell, markdown_table
from sparkops.bench.measure.metrics import STALL_WARN_MS
from sparkops.bench.report.charts import classic_charts, depth_label, layout_charts, sweep_charts
from sparkops.bench.report.crossover import crossovers
from sparkops.bench.report.html import Cell, Table, page
from sparkops.bench.report.tune_runs import tune_section
from sparkops.bench.results.benchy_json import BENCHY_ENGINE, BenchyFormatError, from_benchy, looks_like_benchy
from sparkops.bench.results.files import load_results
from sparkops.config.layouts import label as layout_label
from sparkops.config.weights import SPEED_ONLY, SPEED_ONLY_NOTE, weights_label

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
COLUMNS = ["model", "profile", "cluster", "mode", "engine", "nodes", "tp", "pp", "status", "weights", "reason",
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
           "pp": p.get("pipeline_parallel"), "status": doc["status"],
           "weights": weights_label(p.get("weights")) or None,
           "reason": reason,
           "completed": m.get("completed"), "failed": m.get("failed"),
           "vllm_version": p.get("vllm_version"), "config_hash": p.get("config_hash"),
           "date": doc["created_at"], "file": path.name}
    for col, where in METRICS:
        out[col] = _get(doc, where)
    return out


def matrix(found: list[tuple[Path, dict]]) -> pd.DataFrame:
    """The classic modes' matrix: the newest result per profile, weights, mode, engine and cluster."""
    rows = [row(path, doc) for path, doc in found]
    df = pd.DataFrame(rows, columns=COLUMNS)
    if df.empty:
        return df
    # Random weights are a row apart; an older result that does not say is one with real weights.
    df = (df.assign(_random=df["weights"] == SPEED_ONLY).sort_values("date")
          .groupby(["profile", "_random", "mode", "engine", "cluster"], dropna=False, sort=False).tail(1)
          .drop(columns="_random"))
    df = (df.assign(_m=df["mode"].map(MODE_ORDER))
          .sort_values(["model", "profile", "weights", "_m", "engine"]).drop(columns="_m"))
    for col in ("nodes", "tp", "pp", "completed", "failed"):
        df[col] = df[col].astype("Int64")
    return df.reset_index(drop=True)


MARKDOWN_COLUMNS = ["model", "profile", "mode", "engine", "nodes", "tp", "status", "weights", "output_tok_s",
                    "total_tok_s",
                    "req_s", "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "median_ttft_content_ms",
                    "mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms", "mean_itl_ms", "median_itl_ms", "p99_itl_ms",
                    "mean_e2el_ms", "median_e2el_ms", "p99_e2el_ms", "single_decode_tok_s", "completed", "failed",
                    "date", "reason"]
MATRIX_NOTE = ("Latencies in ms, throughputs per second of the run. TTFT/TPOT/ITL/E2EL follow "
               "`vllm bench serve`; `ttft_content` is TTFT to the first content token (sparkops engine "
               "only). `single_decode_tok_s` comes from the single-request run. Rows with status FAILED "
               "or SKIPPED give the reason in the last column; so does an ok row whose benchmark client "
               f"was held up (its latencies or throughput may be off). weights \"{SPEED_ONLY}\": served with "
               "random weights, figures of speed only.")


def to_markdown(df: pd.DataFrame) -> str:
    rows = [{c: shown_status(r[c]) if c == "status" else r[c] for c in MARKDOWN_COLUMNS} for _, r in df.iterrows()]
    return markdown_table(rows, MARKDOWN_COLUMNS, cell=_cell) + "\n\n" + MATRIX_NOTE + "\n"


def shown_status(status: object) -> str:
    """ok as is; anything else in capitals, so it stands out among the numbers."""
    return str(status) if status == "ok" else str(status).upper()


def _cell(v: object) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.2f}"
    return markdown_cell(v)


# --- loading ----------------------------------------------------------------------------------

def load_all(results: Path) -> tuple[list[tuple[Path, dict]], list[str]]:
    """Every sparkops result in `results`, and each llama-benchy JSON file there as a sweep
    result of engine "llama-benchy"; a warning names every other JSON file (skipped)."""
    found, warnings = load_results(results)
    for path in sorted(Path(results).glob("*.json")):
        data = read_json(path)
        if path.name.startswith(".") or not looks_like_benchy(data):
            continue
        # load_results warned that this is no sparkops result; what we say about it replaces that.
        warnings = [w for w in warnings if not w.startswith(f"skipped {path}:")]
        try:
            found.append((path, from_benchy(data, path.name)))
        except BenchyFormatError as exc:
            warnings.append(f"skipped {path}: looks like llama-benchy's JSON, but {exc}")
    return found, warnings


def read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # load_results has said why


# --- sweeps: the compare matrix ---------------------------------------------------------------

# (name in the cells table, part of a cell, key there): depth cells give llama-benchy's figures,
# serving cells the per-run spread of vLLM's.
DEPTH_FIGURES = [("pp", "benchy", "pp_throughput"), ("tg", "benchy", "tg_throughput")]
SERVING_FIGURES = [("out_tok_s", "spread", "output_throughput"), ("ttft_p50_ms", "spread", "median_ttft_ms"),
                   ("ttft_p99_ms", "spread", "p99_ttft_ms")]
SERVING_TITLES = {"out_tok_s": "out tok/s", "ttft_p99_ms": "TTFT p99 ms"}  # p50: in the charts only
CELL_COLUMNS = ["label", "profile", "layout", "kind", "metric", "pp", "tg", "depth", "concurrency", "status",
                "reason", "cell", "mean", "std", "column"]
COMPARE_ID = ["profile", "layout", "model", "source", "status", "weights"]
COMPARE_TAIL = ["reason", "vllm_version", "config_hash", "date", "file"]
STD = " ±"  # a compare.csv column holding the std of the column before it
COMPARE_NOTE = (
    "pp/tg t/s: llama-benchy's definitions (pp: prompt tokens / time to the first response chunk "
    "less the measured latency; tg: tokens after the first / time from first to last token), "
    "concurrency 1 unless a column says cN; d4k = 4096 tokens of context depth. out tok/s and TTFT "
    "p99 ms: `vllm bench serve`'s definitions at cN requests in flight. Every figure is the mean ± "
    "population std over the cell's runs (compare.csv: the std in the `±` column). status PARTIAL: "
    "some cells failed or were skipped (the reason column says which and why); source llama-benchy: "
    f"a llama-benchy JSON file from the results folder; weights \"{SPEED_ONLY}\": served with random "
    "weights, figures of speed only (their labels in the charts say \"random weights\"). "
    "accepted_per_step (only where a server speculates): tokens a decoding step emitted on average, "
    "1 + accepted draft tokens per draft; such a row's t/s hold for the shipped prompts' natural text, "
    "and move with the content.")


def sweep_tables(sweeps: list[tuple[Path, dict]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the compare matrix, the cells table the charts draw): one compare row per profile, its
    newest depth and serving sweeps merged; a llama-benchy file is a row of its own."""
    groups = newest_sweeps(sweeps)
    labels = row_labels(groups)
    records = {key: [r for _, doc in docs for r in cell_records(labels[key], doc, key)] for key, docs in groups.items()}
    every = [r for rs in records.values() for r in rs]
    name_columns(every)
    columns = ordered_columns(every)
    rows = [compare_row(key, docs, records[key]) for key, docs in groups.items()]
    spec = ["accepted_per_step"] if any("accepted_per_step" in r for r in rows) else []
    df = pd.DataFrame(rows, columns=COMPARE_ID + [c for col in columns for c in (col, col + STD)] + spec
                      + COMPARE_TAIL)
    if not df.empty:
        # Our profiles first, then the community's files, each by model.
        df = (df.assign(_theirs=df["source"] != "sparkops")
              .sort_values(["_theirs", "model", "profile", "layout"], kind="stable", na_position="last")
              .drop(columns="_theirs").reset_index(drop=True))
    cells = pd.DataFrame(every, columns=CELL_COLUMNS)
    for col in ("pp", "tg", "depth", "concurrency"):
        cells[col] = cells[col].astype("Int64")
    return df, cells


RowKey = tuple[str, str, str, str]  # (source, profile or file, layout label or "", weights or "")
RANDOM = " (random weights)"  # after a row's name wherever it is drawn or told


def row_key(path: Path, doc: dict) -> RowKey:
    """(source, name, layout, weights) of the compare row a sweep belongs to: our profile (or
    the API URL when benched by URL) in its layout, with random weights a row apart from the
    real ones; a llama-benchy file is a row by itself."""
    if doc["engine"] == BENCHY_ENGINE:
        return BENCHY_ENGINE, path.name, "", ""
    p = doc["provenance"]
    layout = layout_label(p.get("layout"), p.get("tensor_parallel"), p.get("pipeline_parallel"), p.get("data_parallel"))
    random = "dummy" if p.get("weights") == "dummy" else ""  # not said: an older result, real weights
    return "sparkops", str(p.get("profile") or p.get("api_url") or "?"), layout, random


def newest_sweeps(sweeps: list[tuple[Path, dict]]) -> dict[RowKey, list[tuple[Path, dict]]]:
    """Per compare row, the newest sweep of each kind (depth, serving)."""
    newest: dict[RowKey, dict[object, tuple[Path, dict]]] = {}
    for path, doc in sorted(sweeps, key=lambda found: str(found[1]["created_at"])):
        kind = (doc.get("sweep") or {}).get("kind")
        newest.setdefault(row_key(path, doc), {})[kind] = (path, doc)
    return {key: list(by_kind.values()) for key, by_kind in newest.items()}


def model_of(docs: list[tuple[Path, dict]]) -> str | None:
    return next((p.get("model") or p.get("served_model_name") for _, d in docs
                 if (p := d["provenance"]).get("model") or p.get("served_model_name")), None)


def row_labels(groups: dict[RowKey, list[tuple[Path, dict]]]) -> dict[RowKey, str]:
    """What a row is called in the charts' legends: the profile (and its layout, when it was
    benched in several); for llama-benchy, the model and the source (and the file, when two
    files are of one model)."""
    layouts: dict[str, set[str]] = {}
    for _source, name, layout, _weights in groups:
        layouts.setdefault(name, set()).add(layout)
    labels = {key: (key[1] + (f" {key[2]}" if len(layouts[key[1]]) > 1 and key[2] else "")
                    + (RANDOM if key[3] == "dummy" else "")
                    if key[0] != BENCHY_ENGINE else f"{model_of(docs)} (llama-benchy)")
              for key, docs in groups.items()}
    taken = list(labels.values())
    return {key: f"{label[:-1]}, {key[1]})" if key[0] == BENCHY_ENGINE and taken.count(label) > 1 else label
            for key, label in labels.items()}


def cell_records(label: str, doc: dict, row: RowKey = ("", "", "", "")) -> list[dict]:
    """One record per cell and figure, with mean and std (None unless the cell is ok and has it).
    `profile` is what the layout charts and sentences name: with random weights, it says so."""
    out = []
    profile = row[1] + (RANDOM if row[3] == "dummy" else "")
    for cell in doc.get("cells") or []:
        kind = "depth" if cell.get("depth") is not None else "serving"
        for metric, part, key in DEPTH_FIGURES if kind == "depth" else SERVING_FIGURES:
            stat = (cell.get(part) or {}).get(key) if cell.get("status") == "ok" else None
            out.append({"label": label, "profile": profile, "layout": row[2],
                        "kind": kind, "metric": metric, "pp": cell.get("pp"), "tg": cell.get("tg"),
                        "depth": cell.get("depth"), "concurrency": cell.get("concurrency") or 1,
                        "status": cell.get("status"), "reason": cell.get("reason"), "cell": cell.get("id"),
                        "mean": stat_value(stat, "mean"), "std": stat_value(stat, "std"), "column": None})
    return out


def stat_value(stat: object, key: str) -> float | None:
    v = stat.get(key) if isinstance(stat, dict) else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def name_columns(records: list[dict]) -> None:
    """Sets each record's compare column. A column needs a qualifier when, across all rows, one
    name would hold cells that differ in something else (two tg values for "pp2048 t/s @ d0")."""
    others: dict[tuple, set] = {}
    for r in records:
        key, other = ambiguity(r)
        others.setdefault(key, set()).add(other)
    for r in records:
        r["column"] = column_name(r, len(others[ambiguity(r)[0]]) > 1)


def ambiguity(r: dict) -> tuple[tuple, object]:
    """(what a column name says, what it does not) of a record."""
    if r["kind"] == "depth":
        main, other = r["metric"], "tg" if r["metric"] == "pp" else "pp"
        return ("depth", main, r[main], r["depth"], r["concurrency"]), r[other]
    return ("serving", r["metric"], r["concurrency"]), r["tg"]


def column_name(r: dict, ambiguous: bool) -> str | None:
    """The community's names: "pp2048 t/s @ d4k", "tg32 t/s @ d0", "out tok/s @ c8",
    "TTFT p99 ms @ c8"; in parentheses what else tells cells apart (the other of pp and tg; the
    concurrency of a depth cell above 1, as llama-benchy's "(c4)"). None: not in the matrix."""
    qualifiers = []
    if r["kind"] == "depth":
        main, other = r["metric"], "tg" if r["metric"] == "pp" else "pp"
        name = f"{main}{r[main]} t/s @ {depth_label(int(r['depth']))}"
        qualifiers += [f"{other}{r[other]}"] if ambiguous else []
        qualifiers += [f"c{r['concurrency']}"] if r["concurrency"] != 1 else []
    else:
        if r["metric"] not in SERVING_TITLES:
            return None
        name = f"{SERVING_TITLES[r['metric']]} @ c{r['concurrency']}"
        qualifiers += [f"tg{r['tg']}"] if ambiguous else []
    return name + (f" ({', '.join(qualifiers)})" if qualifiers else "")


def ordered_columns(records: list[dict]) -> list[str]:
    """Depth columns (by concurrency, depth, pp before tg), then serving columns (by concurrency)."""
    def order(r: dict) -> tuple:
        metric = [m for m, _, _ in DEPTH_FIGURES + SERVING_FIGURES].index(r["metric"])
        return (r["kind"] != "depth", r["concurrency"], r["depth"] or 0, metric, r["pp"] or 0, r["tg"] or 0)
    return list(dict.fromkeys(r["column"] for r in sorted(records, key=order) if r["column"]))


def compare_row(key: RowKey, docs: list[tuple[Path, dict]], records: list[dict]) -> dict:
    prov = [doc["provenance"] for _, doc in docs]
    row: dict[str, object] = {
        "profile": key[1] if key[0] != BENCHY_ENGINE else model_of(docs), "layout": key[2] or None,
        "model": model_of(docs), "source": key[0],
        "status": sweep_status(docs),
        "weights": weights_label(key[3] or joined(p.get("weights") for p in prov)) or None,
        "reason": "; ".join(sweep_reasons(docs)) or None,
        "vllm_version": joined(p.get("vllm_version") for p in prov),
        "config_hash": joined(p.get("config_hash") for p in prov),
        "date": max(str(doc["created_at"]) for _, doc in docs), "file": joined(path.name for path, _ in docs)}
    for r in records:
        if r["column"]:
            row[r["column"]], row[r["column"] + STD] = r["mean"], r["std"]
    spec = accepted_per_step(docs)
    if spec is not None:  # a column only where some row speculates
        row["accepted_per_step"] = spec
    return row


def accepted_per_step(docs: list[tuple[Path, dict]]) -> float | None:
    """Speculative decoding's mean acceptance length over the row's measured cells (1 + accepted
    / drafts, vLLM's definition), or None where the server does not speculate: such a row's
    tok/s depend on the prompts' content (docs/benchmarks-and-report.md)."""
    found = [c["spec_decode"] for _, doc in docs for c in doc.get("cells") or []
             if c.get("status") == "ok" and (c.get("spec_decode") or {}).get("drafts")]
    if not found:
        return None
    return round(1 + sum(f["accepted"] for f in found) / sum(f["drafts"] for f in found), 2)


def sweep_status(docs: list[tuple[Path, dict]]) -> str:
    """ok: every planned cell has figures; partial: some; failed or skipped: none."""
    cells = [c for _, doc in docs for c in doc.get("cells") or []]
    statuses = {c.get("status") for c in cells} | {doc["status"] for _, doc in docs}
    incomplete = any((doc.get("sweep") or {}).get("complete") is False for _, doc in docs)
    if statuses == {"ok"} and not incomplete:
        return "ok"
    if any(c.get("status") == "ok" for c in cells):
        return "partial"
    return "failed" if "failed" in statuses or incomplete else "skipped"


def sweep_reasons(docs: list[tuple[Path, dict]]) -> list[str]:
    out = []
    for _, doc in docs:
        sweep, cells = doc.get("sweep") or {}, doc.get("cells") or []
        kind = sweep.get("kind") or "sweep"
        if doc["status"] != "ok":
            out.append(f"{kind} sweep {doc['status']}: {doc.get('reason')}")
        if sweep.get("complete") is False:
            out.append(f"{kind} sweep incomplete ({len(cells)} of {sweep.get('cells_planned')} cells run)")
        out += [f"{c.get('id')} {c.get('status')}: {c.get('reason')}" for c in cells if c.get("status") != "ok"]
    return out


def joined(values: Iterable[object]) -> str | None:
    """The distinct values of the row's sweeps, in order ("0.11.0 / 0.11.1" when they differ)."""
    return " / ".join(dict.fromkeys(str(v) for v in values if v)) or None


def compare_markdown(df: pd.DataFrame) -> str:
    columns = compare_display_columns(df)
    rows = [{c: display(r, c) for c in columns} for _, r in df.iterrows()]
    return markdown_table(rows, columns, cell=markdown_cell) + "\n\n" + COMPARE_NOTE + "\n"


def compare_display_columns(df: pd.DataFrame) -> list[str]:
    """The matrix as read: a figure and its std in one column ("8521.3 ± 12.0")."""
    return [c for c in df.columns if not c.endswith(STD)]


def display(r: pd.Series, column: str) -> str:
    if column == "status":
        return shown_status(r[column])
    if column + STD in r.index:
        return with_std(r[column], r[column + STD])
    return _cell(r[column])


def with_std(mean: object, std: object) -> str:
    """"8521.3 ± 12.0": the std with the mean's decimals (one from 10 up, else two)."""
    if not isinstance(mean, float) or math.isnan(mean):
        return "—"
    places = 1 if abs(mean) >= 10 else 2
    spread = f" ± {std:.{places}f}" if isinstance(std, float) and not math.isnan(std) else ""
    return f"{mean:.{places}f}{spread}"


LAYOUTS_NOTE = ("Output throughput of each profile's serving sweeps, layout against layout at each "
                "concurrency both measured; a lead inside the two runs' spreads (mean ± std) is called "
                "within the spread. Charts: layouts-<profile>.png.")


def layouts_markdown(crossings: dict[str, str]) -> str:
    """The crossover sentences (layouts.md, and the end of compare.md); '' without any."""
    if not crossings:
        return ""
    return "## Layouts\n\n" + "\n".join(f"- {text}" for text in crossings.values()) + f"\n\n{LAYOUTS_NOTE}\n"


# --- which is fastest ------------------------------------------------------------------------

# The questions an owner asks of the compare table, each answered by one of its columns:
# (question, column pattern, higher is better). The first column that matches is used.
HEADLINES = (
    ("Fastest decode for one user", re.compile(r"^tg\d+ t/s @ d0$"), True),
    ("Fastest prompt processing", re.compile(r"^pp\d+ t/s @ d0 \(tg\d+\)$"), True),
    ("Most output under load", re.compile(r"^out tok/s @ c(\d+)$"), True),
    ("Quickest first token for one user", re.compile(r"^TTFT p99 ms @ c1$"), False),
)


def fastest(df: pd.DataFrame) -> list[str]:
    """One sentence per headline: the best row, its figure ± std and the runner-up's; a lead
    inside the two rows' spreads (the difference at most the sum of their stds) is called a
    tie, since another run could order them the other way."""
    if df.empty:
        return []
    out = []
    labels = _row_labels(df)
    for question, pattern, higher in HEADLINES:
        matching = [c for c in df.columns if not c.endswith(STD) and pattern.match(c)]
        if not matching:
            continue
        # Under load: the highest concurrency measured; otherwise the first (shortest tg, d0).
        column = max(matching, key=lambda c: int(pattern.findall(c)[0])) if pattern.groups else matching[0]
        rows = [(labels[i], float(r[column]), _std(r, column)) for i, r in df.iterrows()
                if isinstance(r[column], (int, float)) and not math.isnan(r[column])]
        if not rows:
            continue
        rows.sort(key=lambda t: t[1], reverse=higher)
        (best, v, sd) = rows[0]
        text = f"{question} ({column}): {best}, {with_std(v, sd)}"
        if len(rows) > 1:
            (second, v2, sd2) = rows[1]
            lead = abs(v - v2)
            verdict = "a tie within the spread" if lead <= sd + sd2 else f"ahead by {lead / abs(v2) * 100:.0f} %"
            text += f"; then {second}, {with_std(v2, sd2)} ({verdict})"
        out.append(text)
    return out


def _std(r: pd.Series, column: str) -> float:
    sd = r.get(column + STD)
    return float(sd) if isinstance(sd, (int, float)) and not math.isnan(sd) else 0.0


def _row_labels(df: pd.DataFrame) -> dict:
    """The profile, with its layout where a profile has rows in several, and "random weights"
    where some of a profile's rows are speed only."""
    labels = {}
    for i, r in df.iterrows():
        same = df[df["profile"] == r["profile"]]
        label = str(r["profile"])
        if same["layout"].nunique() > 1:
            label += f" ({r['layout']})"
        if same["weights"].fillna("").nunique() > 1 and isinstance(r["weights"], str) and r["weights"]:
            label += " (random weights)"
        labels[i] = label
    return labels


FASTEST_NOTE = ("Each line: the best row of compare.csv at that column, then the runner-up; a lead no "
                "larger than the two rows' std added together is called a tie.")


def fastest_markdown(lines: list[str]) -> str:
    if not lines:
        return ""
    return "## Which is fastest\n\n" + "\n".join(f"- {line}" for line in lines) + f"\n\n{FASTEST_NOTE}\n\n"


# --- index.html -----------------------------------------------------------------------------------

HTML_MATRIX_COLUMNS = [*MARKDOWN_COLUMNS, "vllm_version", "config_hash", "file"]


def html_tables(matrix_df: pd.DataFrame, compare_df: pd.DataFrame) -> list[Table]:
    tables = []
    if not compare_df.empty:
        columns = compare_display_columns(compare_df)
        rows = [[html_cell(r[c], display(r, c)) for c in columns] for _, r in compare_df.iterrows()]
        tables.append(Table("compare", "Sweeps: one row per profile (compare.csv)", columns, rows,
                            [COMPARE_NOTE.replace("`", "")]))
    if not matrix_df.empty:
        rows = [[html_cell(r[c], shown_status(r[c]) if c == "status" else _cell(r[c])) for c in HTML_MATRIX_COLUMNS]
                for _, r in matrix_df.iterrows()]
        tables.append(Table("matrix", "Single, quick, full and custom runs (matrix.csv)", HTML_MATRIX_COLUMNS,
                            rows, [MATRIX_NOTE.replace("`", "")]))
    return tables


def html_cell(value: object, text: str) -> Cell:
    """A cell's text as in the Markdown (empty instead of "—"), and its number to sort by."""
    # numbers.Real: numpy's integers too (a pandas row of nullable Int64 yields them).
    number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else None
    return Cell("" if text == "—" else text, number if number is not None and math.isfinite(number) else None)


# --- inv report ---------------------------------------------------------------------------------

def report(results: Path, out: Path) -> tuple[pd.DataFrame, list[Path], list[str]]:
    """Writes matrix.csv/.md (classic modes), compare.csv/.md (sweeps), the charts and
    index.html into `out`; returns the classic matrix, the files written and the warnings."""
    if not Path(results).is_dir():
        raise SparkopsError(f"no results folder {results}", step="report",
                            fix="run `inv bench` or `inv bench-all` first, or give --results DIR")
    found, warnings = load_all(results)
    df = matrix([(p, d) for p, d in found if d["mode"] != "sweep"])
    compare, cells = sweep_tables([(p, d) for p, d in found if d["mode"] == "sweep"])
    out.mkdir(parents=True, exist_ok=True)
    files = [atomic_write(out / "matrix.csv", df.to_csv(index=False)), atomic_write(out / "matrix.md", to_markdown(df)),
             atomic_write(out / "compare.csv", compare.to_csv(index=False))]
    crossings = crossovers(cells)
    layouts_md = layouts_markdown(crossings)
    tail = f"\n{layouts_md}" if layouts_md else ""
    headline = fastest(compare)
    files.append(atomic_write(out / "compare.md", fastest_markdown(headline) + compare_markdown(compare) + tail))
    if layouts_md:
        files.append(atomic_write(out / "layouts.md", layouts_md))
    charts = classic_charts(df, out) + sweep_charts(cells, out) + layout_charts(cells, out)
    tune_table, tune_charts, tune_md, tune_warnings = tune_section(results)
    warnings = [*warnings, *tune_warnings]
    if tune_md:
        files.append(atomic_write(out / "tune.md", tune_md))
    random = sum(1 for _, d in found if (d.get("provenance") or {}).get("weights") == "dummy")
    notes = [f"From {len(found)} result files in {results}."]
    notes += [f"{random} of them {SPEED_ONLY_NOTE}."] if random else []
    notes += [*crossings.values(), *warnings]
    tables = html_tables(df, compare) + ([tune_table] if tune_table else [])
    html = page("sparkops benchmark report", tables, charts + tune_charts, notes,
                headline=[*headline, FASTEST_NOTE] if headline else [])
    return df, [*files, *charts, atomic_write(out / "index.html", html)], warnings

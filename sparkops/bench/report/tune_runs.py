"""The report's section on `inv tune` runs: one row per run under results/tune/, read from its
summary.json (data only: this package does not import the tune verb). A file that does not
parse, or is not a tune summary, is named in a warning and skipped; its figures are only shown,
never trusted as paths (the Pareto chart is read from the run's own folder, by its fixed name).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from sparkops.bench.report.html import Cell, Table

KIND = "sparkops-tune-summary"
COLUMNS = ["tune", "profile", "cluster", "objective", "SLOs", "status", "trials", "winner", "score", "gain"]


def load_tunes(results: Path) -> tuple[list[tuple[Path, dict]], list[str]]:
    found, warnings = [], []
    for path in sorted((Path(results) / "tune").glob("*/summary.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            warnings.append(f"skipped {path}: not readable JSON ({exc})")
            continue
        if not isinstance(doc, dict) or doc.get("kind") != KIND or not isinstance(doc.get("trials"), list):
            warnings.append(f"skipped {path}: not a sparkops tune summary")
            continue
        found.append((path, doc))
    return found, warnings


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _table(doc: dict, name: str) -> dict:
    value = doc.get(name)
    return value if isinstance(value, dict) else {}


def row(path: Path, doc: dict) -> dict:
    winner, score, gain, changed = _table(doc, "winner"), {}, {}, {}
    if winner:
        score, gain, changed = _table(winner, "score"), _table(winner, "gain"), _table(winner, "changed")
    value, std = _num(score.get("value")), _num(score.get("std")) or 0.0
    pct, pct_std = _num(gain.get("percent")), _num(gain.get("std_percent")) or 0.0
    ok = sum(1 for t in doc["trials"] if isinstance(t, dict) and t.get("status") == "ok")
    return {
        "tune": str(doc.get("id", path.parent.name)), "profile": str(doc.get("profile", "")),
        "cluster": str(doc.get("cluster", "")), "objective": str(doc.get("objective", "")),
        "SLOs": ", ".join(map(str, doc.get("slos") or [])) or "none", "status": str(doc.get("status", "")),
        "trials": f"{len(doc['trials'])} ({ok} ran) of a {doc.get('grid_trials', '?')}-trial grid",
        "winner": (", ".join(f"{k}={json.dumps(v)}" for k, v in changed.items()) or "the profile's own settings")
        if winner else "(not finished)",
        "score": f"{value:.1f} ± {std:.1f} {score.get('unit', '')}".strip() if value is not None else "",
        "score_sort": value,
        "gain": f"{pct:+.1f} % ± {pct_std:.1f}" if pct is not None else "", "gain_sort": pct,
    }


def tune_section(results: Path) -> tuple[Table | None, list[Path], str, list[str]]:
    """(the HTML table, the runs' Pareto charts, Markdown, warnings)."""
    found, warnings = load_tunes(results)
    if not found:
        return None, [], "", warnings
    rows = [row(p, d) for p, d in found]
    table = Table("tune", "Tune runs (results/tune/*/summary.json)", COLUMNS,
                  [[Cell(r[c], r.get(f"{c}_sort")) for c in COLUMNS] for r in rows],
                  ["Each run's trials, decisions and figures are in its summary.json; `inv tune --resume --write` "
                   "keeps a winner. The gain is over the profile's own settings, with its spread."])
    charts = [p.parent / "pareto.png" for p, d in found if (p.parent / "pareto.png").is_file()]
    lines = ["## Tune runs", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r[c].replace("|", "\\|") for c in COLUMNS) + " |" for r in rows]
    return table, charts, "\n".join(lines) + "\n", warnings

"""llama-benchy's JSON (`llama-benchy --format json`, version 0.4.0) and sparkops sweep results,
converted both ways, so the report can put community numbers beside ours and our numbers can
be posted where llama-benchy's are read.

Key names map one to one: a depth cell's `benchy` figures are llama-benchy's `pp_throughput`,
`tg_throughput`, ... with llama-benchy's definitions and units; `context_size` is the cell's
`depth`, `prompt_size` its `pp`, `response_size` its `tg`. A cell's `context` (the context-load
phase with prefix caching) is llama-benchy's entry with `is_context_prefill_phase: true`.
Pure functions: no files, no clock.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sparkops.bench.results.files import empty_provenance, new_result

BENCHY_ENGINE = "llama-benchy"
# llama-benchy's figures of one test, in its order: t/s, then ms (ttfr, est_ppt, e2e_ttft).
METRICS = ("pp_throughput", "pp_req_throughput", "tg_throughput", "tg_req_throughput", "peak_throughput",
           "peak_req_throughput", "ttfr", "est_ppt", "e2e_ttft")
# Saved only with --save-*-throughput-timeseries; a sweep cell has no place for them.
TIME_SERIES = ("throughput_over_time", "requests_throughput_over_time")
SIZES = ("concurrency", "context_size", "prompt_size", "response_size")
TIME_FORMAT = "%Y-%m-%d %H:%M:%SZ"  # llama-benchy's "timestamp"


class BenchyFormatError(ValueError):
    """JSON that is not llama-benchy's result document."""


def looks_like_benchy(data: object) -> bool:
    """llama-benchy's document, as told apart from other JSON: a "benchmarks" list and no
    sparkops "kind"."""
    return isinstance(data, dict) and isinstance(data.get("benchmarks"), list) and "kind" not in data


# --- sparkops -> llama-benchy ---------------------------------------------------------------

def to_benchy(doc: dict) -> dict:
    """A sparkops sweep result as llama-benchy's JSON: one entry per ok depth cell (preceded by
    its context-load entry when it has one), metadata from the sweep and the provenance."""
    sweep, prov = doc.get("sweep") or {}, doc.get("provenance") or {}
    cells = [c for c in doc.get("cells") or [] if _is_benchy_cell(c)]
    benchmarks = []
    for cell in cells:
        if cell.get("context"):
            benchmarks.append(_benchy_entry(cell, cell["context"], context=True))
        if cell.get("benchy"):
            benchmarks.append(_benchy_entry(cell, cell["benchy"], context=False))
    return {**_benchy_metadata(doc, sweep, prov, cells), "benchmarks": benchmarks}


def _is_benchy_cell(cell: dict) -> bool:
    return (cell.get("status") == "ok" and cell.get("depth") is not None and cell.get("pp") is not None
            and bool(cell.get("benchy") or cell.get("context")))


def _benchy_metadata(doc: dict, sweep: dict, prov: dict, cells: list[dict]) -> dict:
    # A document that came from llama-benchy keeps its own version and timestamp (round trip).
    detail = (doc.get("engine_detail") or {}) if doc.get("engine") == BENCHY_ENGINE else {}
    return {
        "version": detail.get("version") or f"sparkops-{prov.get('sparkops_version')}",
        "timestamp": detail.get("timestamp") or _benchy_time(doc.get("created_at")),
        "latency_mode": sweep.get("latency_mode") or "none",
        "latency_ms": float(sweep.get("latency_ms") or 0.0),
        "model": prov.get("model") or prov.get("served_model_name") or "unknown",
        "prefix_caching_enabled": bool(sweep.get("prefix_caching")),
        "max_concurrency": max((int(c["concurrency"]) for c in cells), default=1),
    }


def _benchy_entry(cell: dict, figures: dict, *, context: bool) -> dict:
    entry: dict[str, Any] = {"concurrency": int(cell["concurrency"]), "context_size": int(cell["depth"]),
                             "prompt_size": int(cell["pp"]), "response_size": int(cell["tg"]),
                             "is_context_prefill_phase": context}
    entry |= {k: _metric(figures.get(k)) for k in METRICS}
    return entry | dict.fromkeys(TIME_SERIES)


def _benchy_time(created_at: object) -> str:
    try:
        when = datetime.fromisoformat(str(created_at))
    except ValueError:
        return str(created_at)
    return when.astimezone(timezone.utc).strftime(TIME_FORMAT)


# --- llama-benchy -> sparkops ---------------------------------------------------------------

def from_benchy(data: object, source_name: str) -> dict:
    """llama-benchy's JSON as a sparkops sweep result (engine "llama-benchy", kind "depth"), for
    the report; `source_name` (the file's name) goes into the id and the provenance notes.
    Raises BenchyFormatError naming what is missing."""
    if not looks_like_benchy(data):
        raise BenchyFormatError('no "benchmarks" list: not llama-benchy\'s JSON')
    assert isinstance(data, dict)
    for key in ("model", "version"):
        if not isinstance(data.get(key), str):
            raise BenchyFormatError(f'no "{key}" string: not llama-benchy\'s JSON')
    cells = _cells(data["benchmarks"], _iso_time(data.get("timestamp")))
    doc = new_result(status="ok" if any(c["status"] == "ok" for c in cells) else "failed",
                     reason=None if cells else "llama-benchy recorded no benchmarks",
                     engine=BENCHY_ENGINE, mode="sweep", settings=_settings(data, cells),
                     provenance=_provenance(data, source_name), engine_detail=_detail(data, source_name))
    doc["id"] = f"{BENCHY_ENGINE}-{source_name.removesuffix('.json')}"
    doc["created_at"] = _iso_time(data.get("timestamp")) or doc["created_at"]
    doc["sweep"] = _sweep(data, cells)
    doc["cells"] = cells
    return doc


def _cells(entries: list, finished_at: str | None) -> list[dict]:
    """One cell per measured entry; a context-load entry is kept until the measured entry of
    the same test (llama-benchy writes it just before) takes it as its `context`."""
    cells: list[dict] = []
    waiting: dict[tuple, dict] = {}
    for i, entry in enumerate(entries):
        sizes = _sizes(entry, i)
        figures = {k: _metric(entry.get(k)) for k in METRICS}
        if entry.get("is_context_prefill_phase"):
            waiting[sizes] = figures
        else:
            cells.append(_cell(sizes, figures, waiting.pop(sizes, None), finished_at))
    # A context phase without its measured entry (a run cut short) still shows its numbers.
    cells += [_cell(sizes, None, figures, finished_at) for sizes, figures in waiting.items()]
    return cells


def _sizes(entry: object, i: int) -> tuple[int, int, int, int]:
    if not isinstance(entry, dict) or not all(isinstance(entry.get(k), int) for k in SIZES):
        raise BenchyFormatError(f"benchmarks[{i}]: needs integer {', '.join(SIZES)}")
    return entry["concurrency"], entry["context_size"], entry["prompt_size"], entry["response_size"]


def _cell(sizes: tuple[int, int, int, int], benchy: dict | None, context: dict | None,
          finished_at: str | None) -> dict:
    c, depth, pp, tg = sizes
    has_figures = any((benchy or {}).values()) or any((context or {}).values())
    return {"id": f"pp{pp}_tg{tg}_d{depth}_c{c}", "pp": pp, "tg": tg, "depth": depth, "concurrency": c,
            "requests_per_run": c, "status": "ok" if has_figures else "failed",
            "reason": None if has_figures else "llama-benchy recorded no figures (every request failed?)",
            "prompt_tokens_requested": pp + depth, "prompt_tokens_counted": None,
            "benchy": benchy, "context": context, "spread": None, "metrics": None,
            "seconds": 0.0, "finished_at": finished_at}  # llama-benchy records no durations


def _sweep(data: dict, cells: list[dict]) -> dict:
    runs = max((len(m["values"]) for c in cells for m in (c["benchy"] or {}).values() if m), default=1)
    return {"suite": None, "kind": "depth", "runs": max(runs, 1),
            "latency_mode": data.get("latency_mode") or "none", "latency_ms": _number(data.get("latency_ms")) or 0.0,
            "tokenizer": "huggingface",
            "tokenizer_note": "llama-benchy builds its prompts with the model's Hugging Face tokenizer",
            "prefix_caching": bool(data.get("prefix_caching_enabled")),
            "corpus": "llama-benchy --book-url (default: Sherlock Holmes, Project Gutenberg)",
            "corpus_digest": None, "cells_planned": len(cells), "complete": True}


def _settings(data: dict, cells: list[dict]) -> dict:
    # The schema asks for these; llama-benchy's JSON does not record temperature or ignore_eos
    # (the notes say so): the server's default temperature, and ignore_eos only with --exact-tg.
    runs = _sweep(data, cells)["runs"]
    return {"dataset": "llama-benchy", "num_prompts": max(1, sum(c["concurrency"] * runs for c in cells)),
            "concurrency": max([c["concurrency"] for c in cells] or [1]),
            "max_tokens": max([c["tg"] for c in cells if c["tg"] > 0] or [1]),
            "temperature": 1.0, "ignore_eos": False, "endpoint": "chat", "request_rate": "inf"}


def _provenance(data: dict, source_name: str) -> dict:
    notes = [f"llama-benchy {data['version']} JSON: {source_name}",
             "temperature and ignore_eos are not in llama-benchy's JSON: settings show defaults"]
    return empty_provenance() | {"model": data["model"], "served_model_name": data["model"], "notes": notes}


def _detail(data: dict, source_name: str) -> dict:
    return {"tool": BENCHY_ENGINE, "version": data["version"], "timestamp": data.get("timestamp"),
            "source": source_name, "max_concurrency": data.get("max_concurrency")}


def _iso_time(stamp: object) -> str | None:
    try:
        return datetime.strptime(str(stamp), TIME_FORMAT).replace(tzinfo=timezone.utc).isoformat()
    except ValueError:
        return None


# --- shared ---------------------------------------------------------------------------------

def _metric(m: object) -> dict | None:
    """{"mean", "std", "values"} as floats, or None for a figure with no data (or not that shape)."""
    if not isinstance(m, dict):
        return None
    mean, std = _number(m.get("mean")), _number(m.get("std"))
    values = m.get("values")
    values = values if isinstance(values, list) else []
    if mean is None:
        return None
    return {"mean": mean, "std": std if std is not None else 0.0,
            "values": [float(v) for v in values if _number(v) is not None]}


def _number(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

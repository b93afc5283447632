"""Result files: one JSON document per run in results/, written atomically, checked against
`result.schema.json` when written and when read back."""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from pathlib import Path

import jsonschema

from sparkops import __version__
from sparkops.base.files import atomic_write
from sparkops.config.weights import SPEED_ONLY_NOTE

KIND = "sparkops-bench-result"
SCHEMA_VERSION = 1
# What makes two runs comparable (bench-all --resume): not the date, not the server's answers.
KEY_FIELDS = ("dataset_digest", "num_prompts", "concurrency", "max_tokens", "temperature",
              "ignore_eos", "endpoint", "request_rate")


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(resources.files("sparkops.bench.results").joinpath("result.schema.json").read_text())


class ResultError(ValueError):
    """A file that is not a valid sparkops result."""


def settings_key(engine: str, mode: str, settings: dict) -> str:
    ident = {"engine": engine, "mode": mode} | {k: settings.get(k) for k in KEY_FIELDS}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def empty_provenance() -> dict:
    return {"profile": None, "cluster": None, "config_hash": None, "model": None, "revision": None,
            "served_model_name": None, "api_url": None, "vllm_version": None, "runtime": None,
            "image_id": None, "venv_vllm_version": None, "nodes": [], "tensor_parallel": None,
            "pipeline_parallel": None, "data_parallel": None, "layout": None, "backend": None, "router": None,
            "nccl": None, "nccl_note": "not looked at", "hardware": [], "weights": None,
            "sparkops_version": __version__}


def weights_provenance(weights: str | None) -> dict:
    """What a result records of the served weights: "real", "dummy" (random: the result measures
    speed only, and says so in its notes) or None (benched by URL, no profile named)."""
    return {"weights": weights} | ({"notes": [SPEED_ONLY_NOTE]} if weights == "dummy" else {})


def speed_only(doc: dict) -> bool:
    """Whether a result was measured on random weights."""
    return (doc.get("provenance") or {}).get("weights") == "dummy"


def new_result(*, status: str, engine: str, mode: str, settings: dict, provenance: dict,
               metrics: dict | None = None, single: dict | None = None, reason: str | None = None,
               log_excerpt: Sequence[str] = (), warnings: Sequence[str] = (),
               engine_detail: dict | None = None) -> dict:
    settings = dict(settings)
    settings["key"] = settings_key(engine, mode, settings)
    now = datetime.now(timezone.utc)
    label = provenance.get("profile") or "url"
    doc = {
        "kind": KIND, "schema_version": SCHEMA_VERSION,
        "id": f"{now:%Y%m%d-%H%M%S}-{label}-{mode}-{engine}",
        "created_at": now.isoformat(timespec="seconds"),
        "status": status, "reason": reason, "log_excerpt": list(log_excerpt),
        "engine": engine, "mode": mode, "settings": settings, "provenance": provenance,
        "metrics": metrics, "single": single, "warnings": list(warnings),
    }
    if engine_detail:
        doc["engine_detail"] = engine_detail
    return _jsonable(doc)


def _jsonable(value):
    """inf/nan are not JSON: they become strings ("inf") or null."""
    if isinstance(value, float):
        if value != value:
            return None
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def validate(doc: dict, where: str = "result") -> None:
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise ResultError(f"{where}: not a sparkops benchmark result (no \"kind\": \"{KIND}\")")
    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        path = "/".join(str(p) for p in e.path) or "(top)"
        raise ResultError(f"{where}: {path}: {e.message}"
                          + (f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""))


def write_result(doc: dict, target: Path) -> Path:
    """Validate, then write atomically. `target` is a directory (file named after the id; an
    existing name gets a -2, -3 suffix) or a file path (--output)."""
    validate(doc)
    target = Path(target)
    if target.suffix == ".json":
        path = target
    else:
        path = target / f"{doc['id']}.json"
        n = 2
        while path.exists():
            path = target / f"{doc['id']}-{n}.json"
            n += 1
    return atomic_write(path, json.dumps(doc, indent=1) + "\n", fsync=True)


def load_results(folder: Path) -> tuple[list[tuple[Path, dict]], list[str]]:
    """Every valid result under `folder` (not recursing into report/), and a warning naming
    each JSON file that is corrupt or not a sparkops result."""
    found, warnings = [], []
    for path in sorted(Path(folder).glob("*.json")):
        if re.match(r"^\.", path.name):
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            validate(doc, str(path))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            warnings.append(f"skipped {path}: not readable JSON ({exc})")
            continue
        except ResultError as exc:
            warnings.append(f"skipped {exc}")
            continue
        found.append((path, doc))
    return found, warnings

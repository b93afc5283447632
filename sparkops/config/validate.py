"""Validating the merged configuration once against the JSON Schema.

Errors name the layer (file) that set the offending value, the JSON path, the
problem, and for typos the closest allowed key or value.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import resources

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from sparkops.base.errors import ConfigError
from sparkops.base.names import did_you_mean
from sparkops.config.layers import Layer


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(resources.files(__package__).joinpath("schema.json").read_text())


def validator() -> Draft202012Validator:
    return Draft202012Validator(schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)


def json_path(parts: Iterable) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def origins(layers: list[Layer]) -> dict[tuple, str]:
    """Which layer last set each path, so an error can name the file to edit."""
    seen: dict[tuple, str] = {}

    def walk(value, path: tuple, name: str):
        seen[path] = name
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(sub, path + (key,), name)
        elif isinstance(value, list):
            for index, sub in enumerate(value):
                walk(sub, path + (index,), name)

    for layer in layers:
        for key, value in layer.data.items():
            walk(value, (key,), layer.name)
    return seen


def origin_of(path: tuple, seen: dict[tuple, str]) -> str:
    for cut in range(len(path), 0, -1):
        if path[:cut] in seen:
            return seen[path[:cut]]
    return "built-in defaults"


def describe(error: ValidationError, seen: dict[tuple, str]) -> str:
    path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, Mapping) else {}  # a bool schema has no keys
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = list(schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        parts = []
        for key in extra:
            hint = did_you_mean(key, allowed)
            where = origin_of(path + (key,), seen)
            parts.append(f"{where}: {json_path(path + (key,))}: unknown key"
                         + (f"; {hint}" if hint else f" (allowed: {', '.join(allowed)})"))
        return "\n".join(parts)
    where = origin_of(path, seen)
    if path[:1] == ("secrets",):  # never echo a secret's value
        return f"{where}: {json_path(path)}: must be a {schema.get('type', 'string')} (value not shown)"
    if (error.validator == "enum" and isinstance(error.instance, str)
            and isinstance(error.validator_value, (list, tuple))):
        hint = did_you_mean(error.instance, error.validator_value)
        choices = ", ".join(repr(v) for v in error.validator_value)
        return (f"{where}: {json_path(path)}: {error.instance!r} is not one of {choices}"
                + (f"; {hint}" if hint else ""))
    if error.validator == "required":
        return f"{where}: {json_path(path)}: {error.message}"
    if error.validator == "pattern":
        what = schema.get("description")
        return (f"{where}: {json_path(path)}: {error.instance!r} has characters that are not "
                f"allowed here" + (f" (expected: {what})" if what else ""))
    return f"{where}: {json_path(path)}: {error.message}"


def validate(doc: dict, layers: list[Layer]) -> None:
    errors = sorted(validator().iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    if not errors:
        return
    seen = origins(layers)
    lines = [describe(e, seen) for e in errors]
    raise ConfigError(
        f"configuration is not valid ({len(errors)} problem{'s' if len(errors) > 1 else ''})",
        details=[line for block in lines for line in block.splitlines()],
        fix="edit the file named on each line; `inv validate` checks again",
    )

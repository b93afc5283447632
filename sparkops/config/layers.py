"""Merging configuration layers.

Order, lowest first: built-in defaults < cluster file < model profile < local override file
< SPARKOPS_* environment variables < CLI flags. Tables merge key by key; any other value
(arrays included) is replaced whole by the higher layer, so a local override's `nodes`
list replaces the cluster file's.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass

import tomlkit
from tomlkit.exceptions import ParseError

from sparkops.base.errors import ConfigError

ENV_PREFIX = "SPARKOPS_"
# Secrets also come from the variables their own tools read.
SECRET_ENV = {"HF_TOKEN": ("secrets", "hf_token"), "VLLM_API_KEY": ("secrets", "api_key")}
# Every config key lives in a section, so a config variable always holds "__"
# (SPARKOPS_SERVING__MAX_MODEL_LEN); others (SPARKOPS_CLUSTER, SPARKOPS_LOCAL, the test
# harness's SPARKOPS_VLLM_VENV, ...) select things and are not config.
# Tables whose keys are environment variable names: what follows them in a variable's name is
# one key, its case kept (SPARKOPS_ENV__VLLM_USE_FLASHINFER_SAMPLER=0 sets
# env.VLLM_USE_FLASHINFER_SAMPLER; lower-cased, the served process would get a variable no
# program reads). A node's own env (cluster.nodes[].env) sits in an array: no variable reaches it.
ENV_NAME_TABLES = ("env",)


@dataclass(frozen=True)
class Layer:
    name: str  # shown to users: a file path, "environment" or "command line"
    data: dict


def deep_merge(base: dict, top: Mapping) -> dict:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)
    return out


def merge(layers: list[Layer]) -> dict:
    doc: dict = {}
    for layer in layers:
        doc = deep_merge(doc, layer.data)
    return doc


def scoped_override(data: dict, profile: str, cluster: str) -> dict:
    """The local override file may scope sections: [clusters.NAME] and [profiles.NAME]."""
    data = dict(data)
    by_cluster = data.pop("clusters", {}) or {}
    by_profile = data.pop("profiles", {}) or {}
    out = data
    if cluster in by_cluster:
        out = deep_merge(out, {"cluster": by_cluster[cluster]})
    if profile in by_profile:
        out = deep_merge(out, by_profile[profile])
    return out


def parse_value(raw: str):
    """A CLI or environment value: TOML syntax when it parses (4096, true, ["a"]), else a string."""
    try:
        return tomlkit.parse(f"v = {raw}").unwrap()["v"]
    except ParseError:
        return raw


def set_path(doc: dict, dotted: str, value, origin: str) -> None:
    set_keys(doc, dotted.split("."), value, origin)


def set_keys(doc: dict, parts: list[str], value, origin: str) -> None:
    dotted = ".".join(parts)
    if not all(parts):
        raise ConfigError(f"{origin}: {dotted!r} is not a key path", fix="write it like serving.max_model_len=4096")
    node = doc
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{origin}: {dotted!r} goes through a value that is not a table")
    node[parts[-1]] = value


def env_key_path(name: str) -> list[str]:
    """The key path a SPARKOPS_A__B__C variable sets: lower-cased parts, except beneath a table
    of ENV_NAME_TABLES, where the rest of the name is one key as written (it may hold "__")."""
    parts = name[len(ENV_PREFIX):].split("__")
    for depth in range(1, len(parts)):
        if ".".join(parts[:depth]).lower() in ENV_NAME_TABLES:
            return [p.lower() for p in parts[:depth]] + ["__".join(parts[depth:])]
    return [p.lower() for p in parts]


def env_layer(environ: Mapping[str, str]) -> Layer:
    """SPARKOPS_SERVING__MAX_MODEL_LEN=4096 sets serving.max_model_len (double underscore = dot);
    SPARKOPS_ENV__NAME=value sets env.NAME, the name's case kept."""
    data: dict = {}
    for name, (section, key) in SECRET_ENV.items():
        if environ.get(name):
            set_path(data, f"{section}.{key}", environ[name], f"${name}")
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = env_key_path(name)
        # An environment variable's value is text: passed on as written (TOML would read 1_000
        # as 1000 and 0x10 as 16). Secrets stay strings too.
        text = path[0] == "secrets" or ".".join(path[:-1]) in ENV_NAME_TABLES
        value = raw if text else parse_value(raw)
        set_keys(data, path, value, f"${name}")
    return Layer("environment", data)


def cli_layer(assignments: list[str]) -> Layer:
    data: dict = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE", fix="e.g. --set serving.max_model_len=4096")
        key = key.strip()
        # Secrets stay strings whatever they look like (a numeric key must not become an int).
        value = raw.strip() if key.startswith("secrets.") else parse_value(raw.strip())
        set_path(data, key, value, f"--set {key}")
    return Layer("command line", data)


def environ() -> Mapping[str, str]:
    return os.environ

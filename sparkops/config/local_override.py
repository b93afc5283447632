"""The local override file (sparkops.local.toml): this cluster's addresses, SSH user and
secrets. Edited with tomlkit so a user's comments and layout survive; always mode 0600."""
from __future__ import annotations

from pathlib import Path

import tomlkit

from sparkops.base.files import atomic_write
from sparkops.base.names import check_name
from sparkops.config.toml_files import parse_toml

HEADER = """\
sparkops local override: layered over the cluster file and profiles, under SPARKOPS_*
environment variables and CLI flags. Kept out of git; mode 0600 because it may hold secrets.
[clusters.NAME] applies to one cluster, [profiles.NAME] to one profile, the rest to all."""


def load(path: Path) -> tomlkit.TOMLDocument:
    if path.is_file():
        parse_toml(path.read_text(), path)  # friendly error first; tomlkit keeps the layout
        return tomlkit.parse(path.read_text())
    doc = tomlkit.document()
    for line in HEADER.splitlines():
        doc.add(tomlkit.comment(line))
    return doc


def update(doc: tomlkit.TOMLDocument, *, cluster: str | None = None, nodes: list[dict] | None = None,
           hf_token: str | None = None, api_key: str | None = None,
           default_cluster: str | None = None) -> tomlkit.TOMLDocument:
    """Set what is given: `nodes` of `cluster` ([clusters.NAME]), secrets (all clusters)."""
    if default_cluster:
        doc["default_cluster"] = check_name("cluster", default_cluster)
    if hf_token is not None or api_key is not None:
        secrets = doc.setdefault("secrets", tomlkit.table())
        if hf_token is not None:
            secrets["hf_token"] = hf_token
        if api_key is not None:
            secrets["api_key"] = api_key
    if nodes is not None:
        cluster = check_name("cluster", cluster or "")
        clusters = doc.setdefault("clusters", tomlkit.table(is_super_table=True))
        table = clusters.setdefault(cluster, tomlkit.table())
        array = tomlkit.aot()
        for node in nodes:
            array.append(tomlkit.item({k: v for k, v in node.items() if v not in (None, "")}))
        table["nodes"] = array
    return doc


def save(doc: tomlkit.TOMLDocument, path: Path) -> None:
    """Atomic, and never readable by others, not even for a moment."""
    atomic_write(path, tomlkit.dumps(doc), mode=0o600)

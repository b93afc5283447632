"""Finding profiles and clusters by name."""
from __future__ import annotations

from pathlib import Path

from sparkops.base.errors import ConfigError
from sparkops.base.names import check_name, closest
from sparkops.base.paths import clusters_dir, profiles_dir


def profile_names(root: Path) -> list[str]:
    return sorted(p.stem for p in profiles_dir(root).glob("*.toml"))


def cluster_names(root: Path) -> list[str]:
    return sorted(p.stem for p in clusters_dir(root).glob("*.toml"))


def profile_path(root: Path, name: str) -> Path:
    return _find("profile", name, profiles_dir(root), profile_names(root), "inv profiles")


def cluster_path(root: Path, name: str) -> Path:
    return _find("cluster", name, clusters_dir(root), cluster_names(root), "ls profiles/clusters")


def _find(kind: str, name: str, folder: Path, names: list[str], lister: str) -> Path:
    check_name(kind, name)
    path = folder / f"{name}.toml"
    if path.is_file():
        return path
    near = closest(name, names)
    raise ConfigError(
        f"unknown {kind} {name!r}" + (f"; did you mean {' or '.join(map(repr, near))}?" if near else ""),
        details=[f"{kind}s: {', '.join(names) or '(none)'}"],
        fix=f"pick one of the names above (`{lister}` lists them), or add {folder / (name + '.toml')}",
    )

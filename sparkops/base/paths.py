"""Where the project's files are: profiles, clusters, data, results, the local override."""
from __future__ import annotations

import os
from pathlib import Path

LOCAL_OVERRIDE = "sparkops.local.toml"


def project_root() -> Path:
    """The checkout sparkops runs from: $SPARKOPS_HOME, else the nearest folder up from the
    current directory that holds profiles/, else the folder this package was installed from."""
    if os.environ.get("SPARKOPS_HOME"):
        return Path(os.environ["SPARKOPS_HOME"]).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "profiles").is_dir() and (folder / "sparkops").is_dir():
            return folder
    return Path(__file__).resolve().parent.parent


def profiles_dir(root: Path) -> Path:
    return root / "profiles"


def clusters_dir(root: Path) -> Path:
    return root / "profiles" / "clusters"


def local_override_path(root: Path) -> Path:
    return Path(os.environ.get("SPARKOPS_LOCAL") or root / LOCAL_OVERRIDE)


def results_dir(root: Path) -> Path:
    return root / "results"


def user_cache_dir() -> Path:
    """This machine's cache for what sparkops learns once (e.g. a vLLM version's flags):
    $XDG_CACHE_HOME/sparkops, else ~/.cache/sparkops."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sparkops"


def flags_cache_dir() -> Path:
    return user_cache_dir() / "vllm-flags"

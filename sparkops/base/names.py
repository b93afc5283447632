"""Names of profiles, clusters and nodes, which end up in file paths and commands."""
from __future__ import annotations

import difflib
import re

from sparkops.base.errors import ConfigError

# Conservative on purpose: names become file names, container names and log prefixes.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(kind: str, name: str) -> str:
    if not _NAME.fullmatch(name or "") or ".." in name:
        raise ConfigError(
            f"{kind} name {name!r} is not allowed",
            fix="use letters, digits, '.', '_' and '-' only (no '/', '..', spaces or shell "
                "characters), e.g. 'gpt-oss-120b'",
        )
    return name


def closest(word: str, choices, n: int = 3) -> list[str]:
    return difflib.get_close_matches(word, list(choices), n=n, cutoff=0.5)


def did_you_mean(word: str, choices) -> str:
    near = closest(word, choices)
    return f"did you mean {' or '.join(repr(c) for c in near)}?" if near else ""

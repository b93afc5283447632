"""Reading TOML layers into plain dicts, with errors that point at file:line:col."""
from __future__ import annotations

from pathlib import Path

import tomlkit
from tomlkit.exceptions import ParseError

from sparkops.base.errors import ConfigError


def read_toml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_toml(text, path)


def parse_toml(text: str, path: Path | str = "<string>") -> dict:
    try:
        return tomlkit.parse(text).unwrap()
    except ParseError as exc:
        line = text.splitlines()[exc.line - 1] if 0 < exc.line <= len(text.splitlines()) else ""
        # tomlkit counts columns from 0; editors and people count from 1.
        raise ConfigError(
            f"{path}:{exc.line}:{exc.col + 1}: TOML syntax error: {_reason(exc)}",
            details=[f"{exc.line:>4} | {line}", "     | " + " " * exc.col + "^"],
            fix="correct the syntax at that position (strings need quotes, tables [name], arrays [a, b])",
        ) from None


def _reason(exc: ParseError) -> str:
    # tomlkit appends " at line X col Y" to its message; the position is already in front.
    msg = str(exc)
    cut = msg.rfind(" at line ")
    msg = msg[:cut] if cut > 0 else msg
    if "\\x00" in msg or "\x00" in msg:
        return "unexpected end of file (an array, table or string is not closed)"
    return msg

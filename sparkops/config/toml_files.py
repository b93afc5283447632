"""Reading TOML layers into plain dicts, with errors that point at file:line:col."""
from __future__ import annotations

import re
from pathlib import Path

import tomlkit
from tomlkit.exceptions import ParseError, TOMLKitError

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
    except TOMLKitError as exc:
        raise _error(exc, text, path) from None


def _error(exc: TOMLKitError, text: str, path: Path | str) -> ConfigError:
    lines = text.splitlines()
    twice = "already exists" in str(exc) or "Redefinition" in str(exc)
    if twice:
        # tomlkit points after a repeated table header (or nowhere, for KeyAlreadyPresent and
        # a table that dotted keys already made): point at the second definition itself.
        key = re.search(r'Key "([^"]+)"', str(exc))
        where = _second_definition(text, key.group(1)) if key else _redefined_table(text)
        return ConfigError(
            f"{path}:{where}: TOML error: {_reason(exc)}" if where else f"{path}: TOML error: {_reason(exc)}",
            details=[f"{where:>4} | {lines[where - 1]}"] if where else [],
            fix="each key and table may be defined once per file: merge the two, or remove one")
    if not isinstance(exc, ParseError):
        return ConfigError(f"{path}: TOML error: {_reason(exc)}", fix="correct the file's syntax")
    line = lines[exc.line - 1] if 0 < exc.line <= len(lines) else ""
    # tomlkit counts columns from 0; editors and people count from 1.
    return ConfigError(
        f"{path}:{exc.line}:{exc.col + 1}: TOML syntax error: {_reason(exc)}",
        details=[f"{exc.line:>4} | {line}", "     | " + " " * exc.col + "^"],
        fix="correct the syntax at that position (strings need quotes, tables [name], arrays [a, b])")


def _reason(exc: TOMLKitError) -> str:
    # tomlkit appends " at line X col Y" to its message; the position is already in front.
    msg = str(exc)
    cut = msg.rfind(" at line ")
    msg = msg[:cut] if cut > 0 else msg
    if "\\x00" in msg or "\x00" in msg:
        return "unexpected end of file (an array, table or string is not closed)"
    return msg


def _second_definition(text: str, key: str) -> int | None:
    """The line (from 1) of the second place `key` is defined, as a key (`key =`, `a.key =`) or
    as the last part of a table header (`[a.key]`), or the first when there is one only."""
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0].strip()
        header = re.match(r"^\[\[?\s*([^\]]+?)\s*\]\]?$", code)
        name = header.group(1) if header else code.split("=", 1)[0].strip() if "=" in code else ""
        if name and name.replace('"', "").replace("'", "").split(".")[-1].strip() == key:
            found.append(n)
    return found[1] if len(found) > 1 else (found[0] if found else None)


_HEADER = re.compile(r"^\[\[?\s*([^\]]+?)\s*\]\]?$")


def _parts(name: str) -> tuple[str, ...]:
    return tuple(p.strip().strip('"').strip("'") for p in name.split("."))


def _redefined_table(text: str) -> int | None:
    """The line of a [table] header naming a table defined before (by a header, or by dotted
    keys such as `arch.layers = 2` under its parent)."""
    seen: set[tuple[str, ...]] = set()
    table: tuple[str, ...] = ()
    for n, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0].strip()
        header = _HEADER.match(code)
        if header:
            table = _parts(header.group(1))
            if table in seen and not code.startswith("[["):
                return n
            seen.add(table)
        elif "=" in code:
            key = _parts(code.split("=", 1)[0])
            for i in range(1, len(key)):
                seen.add(table + key[:i])
    return None

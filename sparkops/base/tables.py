"""Rows of dicts as a table for people: aligned plain text for the terminal, or Markdown for
reports. The one table renderer of sparkops."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any


def text_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *,
               headers: Mapping[str, str] | None = None, header: bool = True, indent: str = "",
               gap: str = "  ", min_width: Mapping[str, int] | None = None) -> str:
    """Columns padded to their widest cell (or `min_width`); headers default to the column
    names upper-cased; header=False leaves the header line out."""
    head = [(headers or {}).get(c, c.upper()) for c in columns]
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(h) if header else 0, (min_width or {}).get(c, 0), *(len(row[i]) for row in cells)])
              for i, (c, h) in enumerate(zip(columns, head))]
    lines = ([head] if header else []) + cells
    return "\n".join((indent + gap.join(v.ljust(w) for v, w in zip(line, widths))).rstrip()
                     for line in lines)


def markdown_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *,
                   headers: Mapping[str, str] | None = None,
                   cell: Callable[[Any], str] = markdown_cell) -> str:
    head = [(headers or {}).get(c, c) for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)

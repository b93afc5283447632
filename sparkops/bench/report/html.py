"""The report as one self-contained HTML file: tables sortable by a click on a header (numbers
sort as numbers), charts embedded as data: URIs. Nothing is fetched from anywhere, so the file
can be mailed or opened on a machine without network.

The page's script also marks what a headless browser can check: `data-images-loaded` on
<body> counts the images that decoded, and `?sort=COLUMN` (with `&desc=1`) sorts on load.
"""
from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Cell:
    text: str
    sort: float | None = None  # what a numeric column sorts by; None: by the text


@dataclass
class Table:
    id: str
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 13px; margin-bottom: 0.5em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f0f0f0; cursor: pointer; user-select: none; position: sticky; top: 0; }
th[data-sorted="asc"]::after { content: " \\25B2"; }
th[data-sorted="desc"]::after { content: " \\25BC"; }
td.not-ok { color: #b00; font-weight: 600; }
.scroll { overflow-x: auto; }
p.note { font-size: 12px; color: #555; max-width: 70em; }
img { display: block; max-width: 100%; margin: 1em 0; border: 1px solid #eee; }
"""

# Sorting: numeric cells carry data-v; empty cells go last either way. `?sort=` runs on load.
SCRIPT = """
function cellKey(td) {
  if (td.dataset.v !== undefined) return {n: parseFloat(td.dataset.v)};
  const t = td.textContent.trim();
  return t === "" || t === "\\u2014" ? null : {s: t.toLowerCase()};
}
function compare(a, b) {
  if (a === null || b === null) return (a === null) - (b === null);
  if (a.n !== undefined && b.n !== undefined) return a.n - b.n;
  return String(a.n ?? a.s).localeCompare(String(b.n ?? b.s), undefined, {numeric: true});
}
function sortTable(table, col, desc) {
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  rows.sort((r1, r2) => {
    const a = cellKey(r1.cells[col]), b = cellKey(r2.cells[col]);
    if (a === null || b === null) return compare(a, b);  // empty last, whatever the direction
    return desc ? compare(b, a) : compare(a, b);
  });
  rows.forEach(r => body.appendChild(r));
  table.querySelectorAll("th").forEach((th, i) => {
    if (i === col) th.dataset.sorted = desc ? "desc" : "asc"; else delete th.dataset.sorted;
  });
}
document.querySelectorAll("table.sortable th").forEach((th, i) => {
  th.addEventListener("click", () => {
    sortTable(th.closest("table"), th.cellIndex, th.dataset.sorted === "asc");
  });
});
const params = new URLSearchParams(location.search);
if (params.has("sort")) {
  document.querySelectorAll("table.sortable th").forEach(th => {
    if (th.dataset.col === params.get("sort"))
      sortTable(th.closest("table"), th.cellIndex, params.get("desc") === "1");
  });
}
function markImages() {
  const imgs = Array.from(document.images);
  document.body.dataset.images = imgs.length;
  document.body.dataset.imagesLoaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
}
window.addEventListener("load", markImages);
"""


def page(title: str, tables: list[Table], charts: list[Path], notes: list[str],
         headline: Sequence[str] = ()) -> str:
    """`headline`: the answers read first (which is fastest), the last one their note."""
    parts = [f"<h1>{esc(title)}</h1>", *(f'<p class="note">{esc(n)}</p>' for n in notes)]
    if headline:
        items = "".join(f"<li>{esc(line)}</li>" for line in headline[:-1])
        parts += ["<h2>Which is fastest</h2>", f'<ul id="fastest">{items}</ul>',
                  f'<p class="note">{esc(headline[-1])}</p>']
    parts += [table_html(t) for t in tables]
    if charts:
        parts.append("<h2>Charts</h2>")
        parts += [image_html(p) for p in charts]
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{esc(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n<script>{SCRIPT}</script>\n</body>\n</html>\n")


def table_html(t: Table) -> str:
    head = "".join(f'<th data-col="{esc(c)}">{esc(c)}</th>' for c in t.columns)
    rows = "\n".join(row_html(r) for r in t.rows)
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in t.notes)
    return (f'<h2>{esc(t.title)}</h2>\n<div class="scroll"><table class="sortable" id="{esc(t.id)}">\n'
            f"<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody></table></div>\n{notes}")


NOT_OK = ("FAILED", "SKIPPED", "PARTIAL")  # how the tables write a status other than ok


def row_html(cells: list[Cell]) -> str:
    return "<tr>" + "".join(cell_html(c) for c in cells) + "</tr>"


def cell_html(c: Cell) -> str:
    if c.sort is not None:
        return f'<td class="num" data-v="{c.sort!r}">{esc(c.text)}</td>'
    return f'<td class="not-ok">{esc(c.text)}</td>' if c.text in NOT_OK else f"<td>{esc(c.text)}</td>"


def image_html(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{esc(path.name)}" title="{esc(path.name)}" src="data:image/png;base64,{data}">'


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)

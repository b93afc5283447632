"""A check report as a table grouped by node, as Markdown, and as files in results/."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .result import CLUSTER, OK, counts

MARK = {"ok": "ok", "warn": "WARN", "fail": "FAIL"}


def _by_node(report) -> list[tuple[str, list]]:
    order = [*report.nodes, *(c.node for c in report.checks if c.node not in report.nodes and c.node != CLUSTER),
             CLUSTER]
    seen, out = set(), []
    for node in order:
        if node in seen:
            continue
        seen.add(node)
        items = [c for c in report.checks if c.node == node]
        if items:
            out.append((node, items))
    return out


def summary(report) -> str:
    n = counts(report.checks)
    return (f"{report.cluster}: {n['ok']} ok, {n['warn']} warn, {n['fail']} fail "
            f"({', '.join(report.groups)}; {report.seconds:.1f}s)")


def table(report) -> str:
    lines = []
    for node, items in _by_node(report):
        lines.append(node if node != CLUSTER else "cluster (all nodes together)")
        width = max(len(c.name) for c in items)
        for c in items:
            lines.append(f"  {MARK[c.status]:<4}  {c.name:<{width}}  {c.message}")
            if c.fix and c.status != OK:
                lines.append(f"  {'':<4}  {'':<{width}}  fix: {c.fix}")
    return "\n".join(lines + ["", summary(report)])


def markdown(report) -> str:
    head = [f"# sparkops check: {report.cluster}", "",
            f"- started: {report.started} ({report.seconds:.1f}s)", f"- groups: {', '.join(report.groups)}",
            f"- profile: {report.profile or '-'}", f"- result: **{report.status}** ({summary(report)})", ""]
    body = []
    for node, items in _by_node(report):
        body += [f"## {node}", "", "| status | check | observed | fix |", "|---|---|---|---|"]
        body += [f"| {c.status} | {c.name} | {_cell(c.message)} | {_cell(c.fix if c.status != OK else '')} |"
                 for c in items]
        body.append("")
    return "\n".join(head + body)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_report(report, folder: Path) -> tuple[Path, Path]:
    """results/<date>-check-<cluster>.json and .md, each written whole or not at all."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{report.started[:19].replace(':', '').replace('-', '')}-check-{report.cluster}"
    paths = (folder / f"{stem}.json", folder / f"{stem}.md")
    for path, text in zip(paths, (json.dumps(report.to_dict(), indent=1) + "\n", markdown(report) + "\n")):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return paths

"""A check report as a table grouped by node, as Markdown, and as files in results/."""
from __future__ import annotations

import json
from pathlib import Path

from sparkops.base.files import atomic_write
from sparkops.base.tables import markdown_table, text_table
from sparkops.checks.result import CLUSTER, OK, Check, CheckReport, counts

MARK = {"ok": "ok", "warn": "WARN", "fail": "FAIL"}


def _by_node(report: CheckReport) -> list[tuple[str, list[Check]]]:
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


def summary(report: CheckReport) -> str:
    n = counts(report.checks)
    return (f"{report.cluster}: {n['ok']} ok, {n['warn']} warn, {n['fail']} fail "
            f"({', '.join(report.groups)}; {report.seconds:.1f}s)")


def table(report: CheckReport) -> str:
    lines = []
    for node, items in _by_node(report):
        lines.append(node if node != CLUSTER else "cluster (all nodes together)")
        rows: list[dict[str, str]] = []
        for c in items:
            rows.append({"status": MARK[c.status], "name": c.name, "message": c.message})
            if c.fix and c.status != OK:
                rows.append({"message": f"fix: {c.fix}"})
        lines.append(text_table(rows, ["status", "name", "message"], header=False, indent="  ",
                                min_width={"status": 4}))
    return "\n".join(lines + ["", summary(report)])


def markdown(report: CheckReport) -> str:
    head = [f"# sparkops check: {report.cluster}", "",
            f"- started: {report.started} ({report.seconds:.1f}s)", f"- groups: {', '.join(report.groups)}",
            f"- profile: {report.profile or '-'}", f"- result: **{report.status}** ({summary(report)})", ""]
    body = []
    for node, items in _by_node(report):
        rows = [{"status": c.status, "check": c.name, "observed": c.message,
                 "fix": c.fix if c.status != OK else ""} for c in items]
        body += [f"## {node}", "", markdown_table(rows, ["status", "check", "observed", "fix"]), ""]
    return "\n".join(head + body)


def write_report(report: CheckReport, folder: Path) -> tuple[Path, Path]:
    """results/<date>-check-<cluster>.json and .md, each written whole or not at all."""
    stem = f"{report.started[:19].replace(':', '').replace('-', '')}-check-{report.cluster}"
    return (atomic_write(folder / f"{stem}.json", json.dumps(report.to_dict(), indent=1) + "\n"),
            atomic_write(folder / f"{stem}.md", markdown(report) + "\n"))

"""Summarise a recorded run of sparkops/node_scripts/allreduce.py: its JSON result line and
the NCCL transport parsed from the same log, with sparkops' own parsers, into one JSON file.

    python benchmarks/nccl_allreduce_summary.py benchmarks/results/nccl_allreduce_h100x2.log \
        --device "2x NVIDIA H100 80GB HBM3 (NV18), driver 580.159.04" --command "..." \
        > benchmarks/results/nccl_allreduce_h100x2.json

A log that did less than it should stops it with exit status 1, naming what (benchmarks/_checks.py):
no result line, no message size measured, a size whose sum came out wrong or that ran fewer
iterations than planned, or NCCL errors in the log.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _checks import expect, fail

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sparkops.checks.nccl import parse_result  # noqa: E402
from sparkops.facts.nccl_log import parse_nccl_log  # noqa: E402


def summary(log: str, device: str, command: str, raw_log: str) -> dict:
    result = parse_result(log)
    if result is None:
        fail(raw_log, "no allreduce.py result line in the log")
    sizes = result.get("results") or []
    if not sizes:
        fail(raw_log, "the result measured no message size")
    for row in sizes:
        case = f"{raw_log}: {row.get('bytes')} bytes"
        expect(case, "all-reduce sum correct", row.get("correct"), True)
        expect(case, "iterations", row.get("iters"), result.get("iters"))
    report = parse_nccl_log(log)
    if report.errors:
        fail(raw_log, f"NCCL reported errors: {report.errors[:3]}")
    return {"device": device, "command": command, "raw_log": raw_log,
            "transport": {"transports": sorted(report.transports), "ib_devices": report.ib_devices,
                          "socket_ifaces": report.socket_ifaces, "nccl_version": report.nccl_version,
                          "fell_back_to_socket": report.fell_back_to_socket, "errors": report.errors,
                          "via_lines": [ln.strip() for ln in log.splitlines() if " via " in ln][:4]},
            "result": result}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("log", type=Path)
    p.add_argument("--device", required=True)
    p.add_argument("--command", required=True)
    a = p.parse_args()
    print(json.dumps(summary(a.log.read_text(), a.device, a.command, a.log.name), indent=1))


if __name__ == "__main__":
    main()

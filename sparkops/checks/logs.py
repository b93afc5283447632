"""The deployment's logs: which transport NCCL chose, and the error signatures that explain a
slow or dead cluster (NCCL timeouts, CUDA out of memory, failed rendezvous)."""
from __future__ import annotations

import re

from sparkops.checks.result import CLUSTER, FAIL, OK, WARN, Check
from sparkops.config import Config
from sparkops.facts.nccl_log import parse_nccl_log
from sparkops.facts.service_log import hint
from sparkops.facts.session import ClusterSession
from sparkops.plan import RUNTIMES, all_services
from sparkops.plan.context import contexts
from sparkops.remote.connection import NodeConn

LINES = 5000
# (label, status, pattern, fix when logtail has no better hint)
SIGNATURES = [
    ("NCCL timeout or error", FAIL,
     r"Watchdog caught collective operation timeout|ProcessGroupNCCL.*[Tt]imeout|ncclSystemError|"
     r"ncclInternalError|ncclRemoteError|NCCL error",
     "a collective failed or hung: `inv check --nccl` tests the transport, `inv check --network` the link"),
    ("CUDA out of memory", FAIL, r"CUDA out of memory|OutOfMemoryError|CUDA error: out of memory", ""),
    ("rendezvous failure", FAIL,
     r"DistStoreError|DistNetworkError|RendezvousTimeoutError|RendezvousConnectionError|"
     r"TCPStore.*(?:timed out|refused|failed)|Connection refused",
     "the ranks could not meet at the head's rendezvous address: `inv check --network` (ports, "
     "reachability over RoCE)"),
    ("NCCL warning", WARN, r"NCCL WARN", "read the warning; `inv check --nccl` shows the transport"),
]


def collect(session: ClusterSession, state: dict | None) -> dict[tuple[str, str], str]:
    """{(node, service): its last LINES log lines} for every service that has a log, through
    the runtime's own log command (docker logs, or the native log file)."""
    cfg = session.cfg
    runtime = RUNTIMES[(state or {}).get("runtime") or cfg.cluster["runtime"]]
    ctxs = {c.name: c for c in contexts(cfg, session.facts, all_nodes=True)}

    def one(conn: NodeConn) -> dict[str, str]:
        found = {}
        for service in all_services(cfg):
            res = conn.run(runtime.log_argv(ctxs[conn.name], service, LINES), timeout=60)
            text = res.stdout + res.stderr
            if res.ok and text.strip():
                found[service] = text
        return found

    out: dict[tuple[str, str], str] = {}
    for node, found in session.group.subset(ctxs).map(one).succeeded.items():
        out |= {(node, service): text for service, text in found.items()}
    return out


def checks(cfg: Config, logs: dict[tuple[str, str], str], state: dict | None) -> list[Check]:
    """Pure: transport and error signatures per (node, service) log."""
    if not logs:
        what = f"{state['profile']} is deployed but" if state else "nothing is deployed:"
        return [Check("logs", "logs", CLUSTER, OK, f"{what} no service logs to scan", {})]
    nvidia = cfg.cluster["accelerator"] == "nvidia"
    multi = len(state["nodes"]) > 1 if state else len(cfg.nodes) > 1
    out = []
    prefix = "" if state else "no deployment recorded; the logs left behind: "
    for (node, service), text in sorted(logs.items()):
        lines = text.splitlines()
        report = parse_nccl_log(text)
        transport = {"transports": sorted(report.transports), "ib_devices": report.ib_devices,
                     "socket_ifaces": report.socket_ifaces, "nccl_version": report.nccl_version}
        if nvidia and multi and report.fell_back_to_socket:
            line = next((ln for ln in lines if "NET/Socket" in ln), "")
            out.append(Check("logs.transport", "logs", node, FAIL,
                             f"{prefix}{service}: NCCL fell back to TCP sockets"
                             f" ({', '.join(report.socket_ifaces) or 'NET/Socket'})",
                             transport | {"line": line.strip()[:300]}, hint(line) or ""))
        elif report.transports:
            out.append(Check("logs.transport", "logs", node, OK,
                             f"{prefix}{service}: NCCL transport {', '.join(sorted(report.transports))}"
                             + (f" over {', '.join(report.ib_devices)}" if report.ib_devices else ""), transport))
        found = False
        for label, status, pattern, fix in SIGNATURES:
            matches = [ln.strip() for ln in lines if re.search(pattern, ln)]
            if matches:
                found = True
                out.append(Check("logs.errors", "logs", node, status,
                                 f"{prefix}{service}: {label} ({len(matches)} line(s)): {matches[0][:200]}",
                                 {"service": service, "signature": label, "count": len(matches),
                                  "lines": matches[:5]}, fix or hint(matches[0]) or ""))
        if not found:
            out.append(Check("logs.errors", "logs", node, OK,
                             f"{prefix}{service}: {len(lines)} lines, no error signature", {"service": service}))
    return out

"""Read an NCCL_DEBUG=INFO log: which transport carried the traffic, and what went wrong.

The point is to catch the silent fallback: NCCL over plain TCP still "works",
4-20x slower, and says so only at INFO level ("NET/Socket", "via NET/Socket").
"""

from __future__ import annotations

import re

from sparkops.facts.types import NcclReport

__all__ = ["NcclReport", "parse_nccl_log"]

# "via NET/IB/0", "via NET/IBext_v8/0(7)/GDRDMA", "via NET/Socket/1",
# "via P2P/CUMEM", "via P2P/direct pointer", "via SHM/direct/direct"
_VIA = re.compile(r"\bvia (NET/(\w+)|P2P|SHM|NVLS|CollNet)")
_NVLS_CHANNELS = re.compile(r"\b(\d+) nvls channels")
_USING_IB = re.compile(r"NET/IB\w* : Using (.*)")
_USING_SOCKET = re.compile(r"NET/Socket : Using (.*)")
_LISTED_DEVICE = re.compile(r"\[\d+\]([^:\s\[\]]+):")
_VERSION = re.compile(r"NCCL version (\S+)")
_NNODES = re.compile(r"\bnNodes (\d+)")
_ERROR_SIGNS = (
    "NCCL WARN",
    "unhandled system error",
    "timed out",
    "Timed out",
    "timeout",
    "out of memory",
    "DistStoreError",
    "DistNetworkError",
    "RendezvousTimeoutError",
    "RendezvousConnectionError",
    "Connection refused",
    "Connection reset",
)


def _transport(via: re.Match) -> str:
    net = via.group(2)
    if net is None:
        return via.group(1)
    return "IB" if net.startswith("IB") else net


def _add_unique(items: list[str], new: list[str]) -> None:
    items.extend(n for n in new if n not in items)


def parse_nccl_log(text: str) -> NcclReport:
    transports: set[str] = set()
    ib_devices: list[str] = []
    socket_ifaces: list[str] = []
    errors: list[str] = []
    gdr_on = gdr_off = socket_chosen = False
    version = None
    nodes: set[int] = set()

    for raw in text.splitlines():
        line = raw.strip()
        for via in _VIA.finditer(line):
            transports.add(_transport(via))
        if "/GDRDMA" in line or "GPU Direct RDMA Enabled" in line:
            gdr_on = True
        if "GPU Direct RDMA Disabled" in line or re.search(r"\bGDR 0\b", line):
            gdr_off = True
        nvls = _NVLS_CHANNELS.search(line)
        if (nvls and int(nvls.group(1)) > 0) or "NVLS Head" in line:
            transports.add("NVLS")
        if m := _USING_IB.search(line):
            _add_unique(ib_devices, _LISTED_DEVICE.findall(m.group(1).split("; OOB")[0]))
        if m := _USING_SOCKET.search(line):
            socket_chosen = True
            _add_unique(socket_ifaces, _LISTED_DEVICE.findall(m.group(1)))
        if "Using network Socket" in line:
            socket_chosen = True
        if version is None and (m := _VERSION.search(line)):
            version = m.group(1)
        if m := _NNODES.search(line):
            nodes.add(int(m.group(1)))
        if any(sign in line for sign in _ERROR_SIGNS) and line not in errors:
            errors.append(line)

    # Socket chosen as the net but no RDMA seen counts as a fallback unless the
    # log proves a single node, where the network is never used.
    single_node = nodes == {1}
    fell_back = "Socket" in transports or (
        socket_chosen and "IB" not in transports and not ib_devices and not single_node
    )
    return NcclReport(
        transports=transports,
        ib_devices=ib_devices,
        socket_ifaces=socket_ifaces,
        gdr=True if gdr_on else (False if gdr_off else None),
        nccl_version=version,
        errors=errors,
        fell_back_to_socket=fell_back,
    )

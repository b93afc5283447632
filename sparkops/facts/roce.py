"""Choosing each node's RoCE interface, address and HCAs from its facts (pure)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from sparkops.base.errors import SparkopsError
from sparkops.facts.node import NodeFacts

# The second PCIe x4 function of a Spark's QSFP port shows up with a capital P in its names
# (enP2p1s0f1np1, roceP2p1s0f1). Sockets go on the plain one; NCCL gets both HCAs.
_TWIN = re.compile(r"^(en|roce)P\d+p")
_WIRELESS = re.compile(r"^(wl|ww)")


@dataclass(frozen=True)
class RoceChoice:
    interface: str
    ip: str
    hcas: tuple[str, ...]
    gid_index: int | None


def is_twin(name: str) -> bool:
    return bool(_TWIN.match(name))


def port_key(name: str) -> str:
    """The same name for both twins of a port: enP2p1s0f1np1 and enp1s0f1np1 -> enp1s0f1np1,
    roceP2p1s0f1 and rocep1s0f1 -> rocep1s0f1."""
    return _TWIN.sub(lambda m: m.group(1) + "p", name, count=1)


def select_roce(facts: NodeFacts, node: dict, network: dict) -> RoceChoice:
    explicit = node.get("roce_interface") or network.get("interface")
    up_links = [link for link in facts.roce if link.up]
    if explicit:
        iface = explicit
    else:
        candidates = [l.netdev for l in up_links if facts.interfaces.get(l.netdev, None)
                      and facts.interfaces[l.netdev].ipv4 and not _WIRELESS.match(l.netdev)]
        plain = [c for c in candidates if not is_twin(c)]
        if not (plain or candidates):
            raise SparkopsError(
                "no RoCE interface is up with an IPv4 address",
                host=facts.node, step="facts",
                details=_roce_evidence(facts),
                fix="cable the QSFP port, bring it up and give it an address (e.g. `sudo ip addr add "
                    "169.254.100.1/16 dev enp1s0f1np1`, see NVIDIA's stacked-sparks guide), or set "
                    "roce_interface/roce_ip for this node in the cluster file")
        iface = (plain or candidates)[0]
    info = facts.interfaces.get(iface)
    ip = node.get("roce_ip") or (info.ipv4[0][0] if info and info.ipv4 else None)
    if not ip:
        raise SparkopsError(
            f"RoCE interface {iface} has no IPv4 address", host=facts.node, step="facts",
            details=_roce_evidence(facts),
            fix=f"give {iface} an address on the cable's subnet, or set roce_ip for this node")
    hcas = tuple(node.get("hcas") or network.get("hcas") or sorted({l.hca for l in up_links}))
    return RoceChoice(iface, ip, hcas, _gid_index(facts, hcas, network))


def _gid_index(facts: NodeFacts, hcas: tuple[str, ...], network: dict) -> int | None:
    """One NCCL_IB_GID_INDEX serves every HCA, but the RoCE v2 index can differ per HCA (and
    move after netplan re-applies). Set it only when all agree; otherwise NCCL (2.21+) picks
    per HCA by itself."""
    if network.get("gid_index") is not None:
        return network["gid_index"]
    found = {facts.gid_index[h] for h in hcas if h in facts.gid_index}
    return found.pop() if len(found) == 1 else None


def _roce_evidence(facts: NodeFacts) -> list[str]:
    lines = [f"RoCE link: {l.hca} port {l.port} ==> {l.netdev} ({'Up' if l.up else 'Down'})"
             for l in facts.roce] or ["no RoCE devices found (ibdev2netdev and /sys/class/infiniband)"]
    for name, iface in sorted(facts.interfaces.items()):
        if name.startswith(("en", "ib")):
            addrs = ", ".join(f"{a}/{p}" for a, p in iface.ipv4) or "no IPv4"
            lines.append(f"interface {name}: {iface.state}, mtu {iface.mtu}, {addrs}")
    return lines


def cable_address(facts: NodeFacts, node: dict, network: dict) -> str:
    """Where the head reaches a node for bulk copies (models, images): its RoCE address when it
    has one (the 200 Gb/s cable), else the address sparkops knows it by."""
    try:
        return select_roce(facts, node, network).ip
    except SparkopsError:
        return node["host"]

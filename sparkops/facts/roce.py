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


def interfaces_unknown_fix(node: str) -> str:
    return (f"install iproute2 on {node} (`sudo apt install iproute2`: `ip -j addr`), or python3 (the "
            "probe reads /sys/class/net with it), or set roce_interface and roce_ip for this node in the "
            "cluster file")


def select_roce(facts: NodeFacts, node: dict, network: dict) -> RoceChoice:
    explicit = node.get("roce_interface") or network.get("interface")
    up_links = [link for link in facts.roce if link.up]
    if "ip" in facts.unknown and not facts.interfaces and not (explicit and node.get("roce_ip")):
        # One node needs no interfaces; nodes that talk over the cable do.
        raise SparkopsError(
            f"the node's network interfaces are unknown ({facts.unknown['ip']}): a multi-node "
            "deployment needs its RoCE interface and address", host=facts.node, step="facts",
            fix=interfaces_unknown_fix(facts.node))
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


@dataclass(frozen=True)
class CopyRoute:
    """Where the head sends a node bulk copies (models, images), and why there."""
    address: str
    over_lan: bool  # True: the node's SSH address (LAN or Wi-Fi), the cable had none
    why: str  # e.g. "RoCE enp1s0f1np1", "SSH address: no RoCE interface is up with an IPv4 address"


def lan_allowed(cluster: dict, over_lan: bool | None = None) -> bool:
    """Whether copies to the workers may take the LAN when the cable has no address: the
    command line's --over-lan, else the cluster's [cluster.sync] over_lan."""
    return bool(cluster.get("sync", {}).get("over_lan", False)) if over_lan is None else over_lan


def copy_route(facts: NodeFacts, node: dict, network: dict, *, over_lan: bool) -> CopyRoute:
    """The node's RoCE address (the 200 Gb/s cable). Without one the copy would go over the
    address sparkops reaches the node at (the LAN, even Wi-Fi: a 65 GB model at a fraction of
    the speed, and with `--transport tcp` its bytes in the clear on the office network), so
    that is refused unless the user allows it (`--over-lan`, or cluster.sync.over_lan)."""
    try:
        choice = select_roce(facts, node, network)
        return CopyRoute(choice.ip, False, f"RoCE {choice.interface}")
    except SparkopsError as exc:
        if not over_lan:
            raise SparkopsError(
                f"no cable address for copies: {exc.message}; copying over its SSH address "
                f"{node['host']} (the LAN) is refused", host=facts.node, step="copy route",
                details=exc.details,
                fix=f"{exc.fix}; or, to copy over the LAN on purpose, add --over-lan (`inv sync`, `inv build`) "
                    "or set cluster.sync.over_lan = true") from None
        return CopyRoute(node["host"], True, f"SSH address ({exc.message})")

"""Network checks from node facts (pure): the RoCE interface and its address, both twin HCAs
of the port, one subnet, one MTU, link speed, and the cluster's ports free."""
from __future__ import annotations

import ipaddress

from sparkops.base.errors import SparkopsError
from sparkops.checks.result import CLUSTER, FAIL, OK, WARN, Check
from sparkops.config import Config
from sparkops.facts.roce import RoceChoice, interfaces_unknown_fix, port_key, select_roce
from sparkops.plan.context import NodeContext

RECOMMENDED_MTU = 9000
MIN_SPEED_MBPS = 100_000  # a Spark's QSFP port is 200 Gb/s; below 100 the cable or port is wrong


def _check(name, node, status, message, fix="", **evidence) -> Check:
    return Check(name, "network", node, status, message, evidence, fix)


def choices(cfg: Config, ctxs: list[NodeContext]) -> tuple[dict[str, RoceChoice], list[Check]]:
    """Each node's RoCE interface, address and HCAs (as `up` picks them), and a check per node."""
    picked, out = {}, []
    for c in ctxs:
        try:
            choice = select_roce(c.facts, c.node, cfg.cluster["network"])
        except SparkopsError as exc:
            out.append(_check("roce.link", c.name, FAIL, exc.message, exc.fix or "", observed=exc.details))
            continue
        info = c.facts.interfaces.get(choice.interface)
        if info is None and "ip" in c.facts.unknown:
            out.append(_check("roce.link", c.name, FAIL, f"RoCE interface {choice.interface}: its state is "
                              f"unknown ({c.facts.unknown['ip']})", interfaces_unknown_fix(c.name),
                              interface=choice.interface))
            continue
        if info is None or info.state not in ("UP", "UNKNOWN"):
            out.append(_check("roce.link", c.name, FAIL,
                              f"RoCE interface {choice.interface} is {info.state if info else 'absent'}",
                              f"bring it up (`sudo ip link set {choice.interface} up`) and check the cable",
                              interface=choice.interface))
            continue
        picked[c.name] = choice
        out.append(_check("roce.link", c.name, OK, f"{choice.interface} up, {choice.ip}",
                          interface=choice.interface, ip=choice.ip, hcas=list(choice.hcas),
                          gid_index=choice.gid_index))
    return picked, out


def hcas(cfg: Config, ctxs: list[NodeContext], picked: dict[str, RoceChoice]) -> list[Check]:
    """Both twins of the used port up (one alone gets about half the link); pinned HCAs up."""
    nvidia = cfg.cluster["accelerator"] == "nvidia"
    out = []
    for c in ctxs:
        choice = picked.get(c.name)
        if choice is None:
            continue
        port = [link for link in c.facts.roce if port_key(link.netdev) == port_key(choice.interface)]
        evidence = {"port": {link.hca: {"netdev": link.netdev, "up": link.up} for link in port},
                    "nccl_ib_hca": list(choice.hcas)}
        up = [link.hca for link in port if link.up]
        down = [link.hca for link in port if not link.up]
        pinned_down = [h for h in choice.hcas if h not in {link.hca for link in c.facts.roce if link.up}]
        if not port:
            status = FAIL if nvidia else OK
            out.append(_check("roce.hcas", c.name, status, f"no RoCE HCA behind {choice.interface}"
                              + ("" if nvidia else " (gloo uses TCP: not needed on a CPU cluster)"),
                              "NCCL would fall back to TCP sockets: check `ibdev2netdev` and the "
                              "ConnectX driver (mlx5_core)" if nvidia else "", **evidence))
        elif pinned_down and nvidia:
            out.append(_check("roce.hcas", c.name, FAIL, f"NCCL_IB_HCA lists {', '.join(pinned_down)}, "
                              "which is not an Up HCA", "fix cluster.network.hcas (or the node's hcas), "
                              "or leave them out to use every Up HCA", **evidence))
        elif not up:
            out.append(_check("roce.hcas", c.name, FAIL if nvidia else WARN,
                              f"every HCA of {choice.interface}'s port is down: {', '.join(down)}",
                              "check the cable and `ibdev2netdev`", **evidence))
        elif down:
            out.append(_check("roce.hcas", c.name, WARN, f"twin HCA {', '.join(down)} is down, only "
                              f"{', '.join(up)} is up: NCCL gets about half the link",
                              f"bring the twin up (`sudo ip link set {_netdev(port, down[0])} up`); "
                              "both PCIe x4 halves of the port are needed for 200 Gb/s", **evidence))
        else:
            out.append(_check("roce.hcas", c.name, OK, f"{', '.join(up)} up"
                              + (" (both twins of the port)" if len(up) > 1 else ""), **evidence))
    return out


def _netdev(links, hca: str) -> str:
    return next(link.netdev for link in links if link.hca == hca)


def _prefix(ctx: NodeContext, choice: RoceChoice) -> int | None:
    info = ctx.facts.interfaces.get(choice.interface)
    return next((p for a, p in (info.ipv4 if info else ()) if a == choice.ip), None)


def subnet(ctxs: list[NodeContext], picked: dict[str, RoceChoice]) -> list[Check]:
    if len(picked) < 2:
        return []
    nets, addrs = {}, {}
    for c in ctxs:
        if c.name in picked:
            choice = picked[c.name]
            prefix = _prefix(c, choice)
            addrs[c.name] = f"{choice.ip}/{prefix}" if prefix is not None else choice.ip
            nets[c.name] = ipaddress.ip_network(f"{choice.ip}/{prefix if prefix is not None else 32}",
                                                strict=False)
    evidence = {"addresses": addrs, "subnets": {n: str(s) for n, s in nets.items()}}
    ips = [picked[n].ip for n in addrs]
    if len(set(ips)) < len(ips):
        return [_check("roce.subnet", CLUSTER, FAIL, f"two nodes share a RoCE address: {addrs}",
                       "give each node its own address on the cable's subnet", **evidence)]
    strays = [n for n in nets if not all(ipaddress.ip_address(picked[m].ip) in nets[n] for m in nets)]
    if strays:
        detail = ", ".join(f"{n}={addrs[n]}" for n in nets)
        return [_check("roce.subnet", CLUSTER, FAIL, f"RoCE addresses are not on one subnet: {detail}",
                       "give every node's RoCE interface an address in one subnet (e.g. 169.254.x.x/16 "
                       "on a direct cable)", **evidence)]
    return [_check("roce.subnet", CLUSTER, OK, f"one subnet {next(iter(nets.values()))}: "
                   + ", ".join(addrs.values()), **evidence)]


def mtu(ctxs: list[NodeContext], picked: dict[str, RoceChoice]) -> list[Check]:
    mtus = {c.name: c.facts.interfaces[picked[c.name].interface].mtu for c in ctxs
            if c.name in picked and picked[c.name].interface in c.facts.interfaces}
    if not mtus:
        return []
    evidence = {"mtu": mtus, "interfaces": {n: picked[n].interface for n in mtus}}
    detail = ", ".join(f"{n}={m}" for n, m in mtus.items())
    if len(set(mtus.values())) > 1:
        return [_check("roce.mtu", CLUSTER, FAIL, f"MTU differs between nodes: {detail}",
                       f"set MTU {RECOMMENDED_MTU} on every node's RoCE interface (`sudo ip link set "
                       f"dev IF mtu {RECOMMENDED_MTU}`, and in netplan): large packets are dropped "
                       "between different MTUs", **evidence)]
    value = next(iter(mtus.values()))
    if value != RECOMMENDED_MTU:
        return [_check("roce.mtu", CLUSTER, WARN, f"MTU {value} on every node; {RECOMMENDED_MTU} is recommended",
                       f"set MTU {RECOMMENDED_MTU} on every node's RoCE interface", **evidence)]
    return [_check("roce.mtu", CLUSTER, OK, f"MTU {value} on every node", **evidence)]


def speed(cfg: Config, ctxs: list[NodeContext], picked: dict[str, RoceChoice]) -> list[Check]:
    out = []
    for c in ctxs:
        if c.name not in picked:
            continue
        iface = picked[c.name].interface
        port = sorted({link.netdev for link in c.facts.roce if port_key(link.netdev) == port_key(iface)}
                      | {iface})
        speeds = {n: c.facts.link_speed_mbps.get(n) for n in port}
        known = speeds.get(iface)
        if known is None:
            out.append(_check("roce.speed", c.name, OK, f"{iface}: link speed not reported", speed_mbps=speeds))
        elif cfg.cluster["accelerator"] == "nvidia" and known < MIN_SPEED_MBPS:
            out.append(_check("roce.speed", c.name, WARN, f"{iface} links at {known / 1000:g} Gb/s",
                              "a Spark's QSFP port runs at 200 Gb/s: check the cable (QSFP112 DAC) and "
                              "`ethtool IF`", speed_mbps=speeds))
        else:
            out.append(_check("roce.speed", c.name, OK, ", ".join(
                f"{n} {s / 1000:g} Gb/s" for n, s in speeds.items() if s), speed_mbps=speeds))
    return out


def service_ports(cfg: Config, ctx: NodeContext, multi: bool) -> list[int]:
    """The ports sparkops' services bind on this node: the API on the head; the rendezvous (mp)
    or Ray port on every node of a multi-node deployment."""
    cluster = cfg.cluster
    ports = [cluster["ports"]["api"]] if ctx.is_head else []
    if multi:
        ports.append(cluster["ports"]["rendezvous"] if cfg.doc["distributed"]["backend"] == "mp"
                     else cluster["ports"]["ray"])
    return ports


def ports(cfg: Config, ctxs: list[NodeContext], serving: dict | None = None) -> list[Check]:
    """Ports free on every node; while sparkops serves, its own deployment holds them."""
    multi = len(ctxs) > 1
    out = []
    for c in ctxs:
        wanted = service_ports(cfg, c, multi)
        if "ports" in c.facts.unknown:
            out.append(_check("ports", c.name, WARN, f"whether port(s) {', '.join(map(str, wanted))} are free is "
                              f"unknown ({c.facts.unknown['ports']})", "install iproute2 (`ss`) on the node, or "
                              "check by hand that nothing listens there", ports=wanted))
            continue
        taken = [p for p in wanted if p in c.facts.ports_in_use]
        ours = serving is not None and c.name in serving.get("nodes", ())
        if taken and ours:
            out.append(_check("ports", c.name, OK, f"port(s) {', '.join(map(str, taken))} held by the "
                              f"running deployment ({(serving or {}).get('profile')})", ports=wanted, taken=taken))
        elif taken:
            out.extend(_check("ports", c.name, FAIL, f"port {p} is already in use",
                              "stop what listens there (`ss -ltnp`), `inv down` if it is an earlier "
                              "sparkops run, or change cluster.ports", port=p, ports=wanted) for p in taken)
        else:
            out.append(_check("ports", c.name, OK, f"port(s) {', '.join(map(str, wanted)) or '-'} free",
                              ports=wanted))
    return out


def checks(cfg: Config, ctxs: list[NodeContext], serving: dict | None = None
           ) -> tuple[dict[str, RoceChoice], list[Check]]:
    """The network group from facts; returns the RoCE choices too (the reachability probe needs
    them). A single node needs no RoCE link: only its ports are checked."""
    if len(ctxs) < 2:
        return {}, ports(cfg, ctxs, serving)
    picked, out = choices(cfg, ctxs)
    out += hcas(cfg, ctxs, picked) + subnet(ctxs, picked) + mtu(ctxs, picked) + speed(cfg, ctxs, picked)
    return picked, out + ports(cfg, ctxs, serving)

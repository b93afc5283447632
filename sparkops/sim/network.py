"""The simulated wiring: one network namespace per host, a "LAN" bridge in the root namespace
(the controller's side), and a "QSFP cable" between the hosts' RoCE ports.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

from sparkops.sim import layout as L


def ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    argv = ["ip", *(("-n", netns) if netns else ()), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc


def build(slot: int, count: int) -> None:
    """Create the namespaces, the LAN and the cable for `count` hosts of `slot`."""
    lan = L.lan_bridge(slot)
    ip("link", "add", lan, "type", "bridge")
    ip("addr", "add", f"{L.mgmt_gateway(slot)}/24", "dev", lan)
    ip("link", "set", lan, "up")
    for i in range(count):
        ns = L.netns_name(slot, i)
        ip("netns", "add", ns)
        ip("link", "set", "lo", "up", netns=ns)
        veth = L.root_veth(slot, "lan", i)
        ip("link", "add", veth, "type", "veth", "peer", "name", L.MGMT_IF, "netns", ns)
        ip("link", "set", veth, "master", lan, "up")
        ip("addr", "add", f"{L.mgmt_ip(slot, i)}/24", "dev", L.MGMT_IF, netns=ns)
        ip("link", "set", L.MGMT_IF, "up", netns=ns)
        # Software that finds "its" IP by routing towards the internet needs a default route.
        ip("route", "add", "default", "via", L.mgmt_gateway(slot), netns=ns)
    _cable(slot, count)
    for i in range(count):
        ns = L.netns_name(slot, i)
        for ifname in (L.ROCE_IF, L.ROCE_TWIN_IF):
            ip("link", "set", ifname, "mtu", str(L.ROCE_MTU), "up", netns=ns)
        ip("addr", "add", f"{L.roce_ip(i)}/16", "dev", L.ROCE_IF, netns=ns)


def _cable(slot: int, count: int) -> None:
    ports = (L.ROCE_IF, L.ROCE_TWIN_IF)
    if count == 2:
        # Two Sparks: a direct cable, i.e. a veth pair per port, both ends inside the hosts.
        # Distinct ifindexes at the two ends: the kernel delays (by up to a second) the carrier
        # of a veth whose peer's ifindex equals its own, taking it for a plain device.
        a, b = L.netns_name(slot, 0), L.netns_name(slot, 1)
        for index, port in enumerate(ports, start=10):
            ip("link", "add", port, "index", str(index), "type", "veth",
               "peer", "name", port, "netns", b, netns=a)
        return
    # More Sparks: a switch. A bridge without an address, so the controller cannot use it.
    bridge = L.roce_bridge(slot)
    ip("link", "add", bridge, "mtu", str(L.ROCE_MTU), "type", "bridge")
    ip("link", "set", bridge, "up")
    for i in range(count):
        for port, role in zip(ports, ("roce", "twin")):
            veth = L.root_veth(slot, role, i)
            ip("link", "add", veth, "mtu", str(L.ROCE_MTU), "type", "veth",
               "peer", "name", port, "netns", L.netns_name(slot, i))
            ip("link", "set", veth, "master", bridge, "up")


def wait_carrier(slot: int, count: int, timeout: float = 5.0) -> None:
    """Wait until every host port is operationally up. The kernel turns a carrier on at most
    once a second (linkwatch); until then the port has no queue and drops every packet."""
    deadline = time.monotonic() + timeout
    for i in range(count):
        ns = L.netns_name(slot, i)
        while True:
            links = json.loads(ip("-j", "link", "show", netns=ns).stdout)
            down = [k["ifname"] for k in links if k["ifname"] != "lo" and k["operstate"] != "UP"]
            if not down:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{L.host_name(i)}: {', '.join(down)} stay down")
            time.sleep(0.02)


def netns_list(slot: int) -> list[str]:
    """The slot's network namespaces that exist now (from /run/netns, as `ip netns` sees them)."""
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(L.netns_prefix(slot)))


def root_links(slot: int) -> list[str]:
    """The slot's links in the root namespace that exist now."""
    links = json.loads(ip("-j", "link", "show").stdout or "[]")
    return [link["ifname"] for link in links if L.owns_link(slot, link["ifname"])]


def destroy(slot: int) -> None:
    """Delete the slot's namespaces and root links; the caller has ended their processes."""
    for ns in netns_list(slot):
        ip("netns", "delete", ns, check=False)
    for name in root_links(slot):
        ip("link", "delete", name, check=False)

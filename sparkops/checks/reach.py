"""Every node's RoCE address from every other node: ping over the RoCE interface, 9000-byte
packets that must not fragment when the MTU is 9000, and a TCP connect to port 22 (SSH over
the cable, which `inv sync` uses). One SSH round trip per node, all nodes at once."""
from __future__ import annotations

from sparkops.checks.network import RECOMMENDED_MTU
from sparkops.checks.result import FAIL, OK, WARN, Check
from sparkops.facts.roce import RoceChoice
from sparkops.plan.context import NodeContext
from sparkops.remote.connection import NodeConn
from sparkops.remote.group import NodeGroup
from sparkops.remote.result import CommandTimeout

# Fixed text; the interface, the big-packet flag and the targets arrive as $1, $2 and "$@".
# A missing tool prints rc 127, which the checks report as "could not test".
SCRIPT = r"""iface=$1 big=$2; shift 2
for ip in "$@"; do
  ping -c1 -W1 -I "$iface" "$ip" >/dev/null 2>&1; echo "ping $ip $?"
  if [ "$big" = 1 ]; then ping -c1 -W1 -M do -s 8972 -I "$iface" "$ip" >/dev/null 2>&1; echo "pmtu $ip $?"; fi
  timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/22"' "$ip" >/dev/null 2>&1; echo "ssh $ip $?"
done
"""
TIMEOUT_S = 60


def argv(interface: str, big: bool, targets: list[str]) -> list[str]:
    return ["sh", "-c", SCRIPT, "sparkops-reach", interface, "1" if big else "0", *targets]


def parse(text: str) -> dict[str, dict[str, int]]:
    """`<kind> <ip> <rc>` lines -> {kind: {ip: rc}}."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].lstrip("-").isdigit():
            out.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return out


def probe(group: NodeGroup, ctxs: list[NodeContext], picked: dict[str, RoceChoice]
          ) -> dict[str, dict | str]:
    """{node: parsed results, or why the probe could not run there}; nodes without a RoCE
    choice are left out (their roce.link check already failed)."""
    names = [c.name for c in ctxs if c.name in picked]
    if len(names) < 2:
        return {}
    mtus = {c.name: c.facts.interfaces[picked[c.name].interface].mtu for c in ctxs if c.name in names}

    def one(conn: NodeConn) -> dict[str, dict[str, int]]:
        me = picked[conn.name]
        targets = [picked[n].ip for n in names if n != conn.name]
        res = conn.run(argv(me.interface, mtus[conn.name] >= RECOMMENDED_MTU, targets), timeout=TIMEOUT_S)
        return parse(res.stdout)

    results = group.subset(names).map(one)
    out: dict[str, dict | str] = dict(results.succeeded)
    for name, exc in results.errors().items():
        out[name] = f"timed out after {exc.timeout:.0f}s" if isinstance(exc, CommandTimeout) else exc.message
    return out


def checks(ctxs: list[NodeContext], picked: dict[str, RoceChoice], results: dict[str, dict | str]) -> list[Check]:
    by_ip = {picked[c.name].ip: c.name for c in ctxs if c.name in picked}
    out = []
    for c in ctxs:
        if c.name not in results:
            continue
        found = results[c.name]
        iface = picked[c.name].interface
        if isinstance(found, str):
            out.append(Check("reach.ping", "network", c.name, FAIL, f"could not run the reachability probe: {found}",
                             {}, "check the node's SSH connection"))
            continue
        out += _ping(c.name, iface, found.get("ping", {}), by_ip)
        out += _pmtu(c.name, iface, found.get("ping", {}), found.get("pmtu", {}), by_ip)
        out += _ssh(c.name, found.get("ssh", {}), by_ip)
    return out


def _peers(rcs: dict[str, int], by_ip: dict[str, str], want) -> list[str]:
    return [f"{by_ip.get(ip, '?')} ({ip})" for ip, rc in rcs.items() if want(rc)]


def _ping(node, iface, rcs, by_ip) -> list[Check]:
    evidence = {"interface": iface, "exit": rcs}
    if not rcs:
        return []
    if all(rc == 127 for rc in rcs.values()):
        return [Check("reach.ping", "network", node, WARN, "ping is not installed: reachability not tested",
                      evidence, "install iputils-ping")]
    lost = _peers(rcs, by_ip, lambda rc: rc != 0)
    if lost:
        return [Check("reach.ping", "network", node, FAIL, f"cannot reach {', '.join(lost)} over {iface}",
                      evidence, "check the cable and that both ends are up and on one subnet (`ip addr`, "
                      "`ibdev2netdev` on each node); a firewall dropping ICMP shows here too")]
    return [Check("reach.ping", "network", node, OK,
                  f"reaches {', '.join(_peers(rcs, by_ip, lambda rc: True))} over {iface}", evidence)]


def _pmtu(node, iface, pings, rcs, by_ip) -> list[Check]:
    tested = {ip: rc for ip, rc in rcs.items() if pings.get(ip) == 0 and rc != 127}
    if not tested:
        return []
    evidence = {"interface": iface, "payload": 8972, "exit": tested}
    blocked = _peers(tested, by_ip, lambda rc: rc != 0)
    if blocked:
        return [Check("reach.mtu_path", "network", node, FAIL,
                      f"9000-byte packets over {iface} do not get through to {', '.join(blocked)}",
                      evidence, "an MTU below 9000 on the path (the peer's interface or a switch): set "
                      "MTU 9000 everywhere on the RoCE link")]
    return [Check("reach.mtu_path", "network", node, OK, "9000-byte packets get through unfragmented", evidence)]


def _ssh(node, rcs, by_ip) -> list[Check]:
    if not rcs:
        return []
    evidence = {"port": 22, "exit": rcs}
    if all(rc == 127 for rc in rcs.values()):
        return [Check("reach.ssh", "network", node, WARN, "bash or timeout is missing: SSH over RoCE not tested",
                      evidence, "")]
    closed = _peers(rcs, by_ip, lambda rc: rc != 0)
    if closed:
        return [Check("reach.ssh", "network", node, WARN,
                      f"SSH (port 22) does not answer on the RoCE address of {', '.join(closed)}",
                      evidence, "`inv sync` copies models over the cable by SSH: let sshd listen on the "
                      "RoCE address too (`ListenAddress`), and allow it in the firewall")]
    return [Check("reach.ssh", "network", node, OK, "SSH port 22 answers on every peer's RoCE address", evidence)]

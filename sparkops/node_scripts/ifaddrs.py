"""A node's network interfaces and IPv4 addresses as `ip -j addr show` prints them, for a node
without iproute2 (the facts probe runs this only when `ip` is missing), so the one parser of
`ip -j addr` reads both.

Standard library and the kernel only: names, state, MTU, link type and MAC from
/sys/class/net, the IPv4 address and netmask from the SIOCGIFADDR / SIOCGIFNETMASK ioctls.
Those give each interface's primary IPv4 address only (`ip` lists secondary ones too) and no
IPv6: the facts use neither. Exit status 69 (EX_UNAVAILABLE) when /sys/class/net cannot be read.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import struct
import sys

SYS_NET = "/sys/class/net"
SIOCGIFADDR = 0x8915
SIOCGIFNETMASK = 0x891B
UNAVAILABLE = 69
# /sys/class/net/IF/type (ARPHRD_*) as `ip` names it in link_type.
LINK_TYPES = {"1": "ether", "772": "loopback", "32": "infiniband", "776": "sit", "65534": "none"}


def _read(name: str, field: str) -> str | None:
    try:
        with open(os.path.join(SYS_NET, name, field)) as f:
            return f.read().strip()
    except OSError:  # a field a virtual interface lacks, or one that vanished meanwhile
        return None


def _ipv4(sock: socket.socket, request: int, name: str) -> str | None:
    try:
        answer = fcntl.ioctl(sock.fileno(), request, struct.pack("256s", name.encode()[:15]))
    except OSError:  # EADDRNOTAVAIL: no IPv4 address on this interface
        return None
    return socket.inet_ntoa(answer[20:24])  # struct ifreq: 16 bytes of name, then a sockaddr_in


def interface(sock: socket.socket, name: str) -> dict:
    link = LINK_TYPES.get(_read(name, "type") or "", "none")
    entry: dict = {"ifindex": int(_read(name, "ifindex") or 0), "ifname": name,
                   "mtu": int(_read(name, "mtu") or 0),
                   "operstate": (_read(name, "operstate") or "unknown").upper(),
                   "link_type": link, "address": _read(name, "address"), "addr_info": []}
    address = _ipv4(sock, SIOCGIFADDR, name)
    if address:
        mask = _ipv4(sock, SIOCGIFNETMASK, name) or "255.255.255.255"
        prefix = bin(struct.unpack("!I", socket.inet_aton(mask))[0]).count("1")
        entry["addr_info"].append({"family": "inet", "local": address, "prefixlen": prefix, "label": name})
    return entry


def main() -> int:
    try:
        names = os.listdir(SYS_NET)
    except OSError as exc:
        print(f"no `ip` command, and {SYS_NET} cannot be read ({exc.strerror})")
        return UNAVAILABLE
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        entries = [interface(sock, name) for name in names]
    print(json.dumps(sorted(entries, key=lambda e: (e["ifindex"], e["ifname"]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One script that reads every fact of a node, so a node costs one round trip.

The script is fixed text built from constant argv; the only inputs (paths, image name)
arrive as positional parameters $1..$6, never interpolated into it ($7 is the text of
node_scripts/ifaddrs.py). Each fact prints as a section `=== NAME` ... `=== /NAME rc=N`, which
`split_sections` takes apart.

A node without iproute2 or `hostname` (a minimal image, a container) still answers: `ip -j addr`
falls back to node_scripts/ifaddrs.py (/sys/class/net and ioctls, run by the node's python3 or
the virtualenv's python, printing the same JSON), `ss -Htln` to /proc/net/tcp and tcp6 (printed
as `ss` lines), `hostname` to /proc/sys/kernel/hostname. Where even that fails the section exits
UNKNOWN with the reason: the fact is unknown (NodeFacts.unknown), not an error; a single node
needs neither interfaces nor hostname, a multi-node plan refuses without interfaces.
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

from sparkops.facts.parsers import IP_ADDR_ARGV, NVIDIA_SMI_QUERY_ARGV, SYSFS_ROCE_SCRIPT
from sparkops.node_scripts import source

# A section that exits with this cannot read its fact on this node (EX_UNAVAILABLE): it prints why.
UNKNOWN = 69

_HOSTNAME = ("if command -v hostname >/dev/null 2>&1; then hostname; "
             "elif [ -r /proc/sys/kernel/hostname ]; then cat /proc/sys/kernel/hostname; "
             f"else echo 'no hostname command and no /proc/sys/kernel/hostname'; exit {UNKNOWN}; fi")
# The node's python3, else the virtualenv's (native runtime): both have the standard library.
_IP = (f"if command -v ip >/dev/null 2>&1; then {shlex.join(IP_ADDR_ARGV)}; else "
       'py=$(command -v python3) || py="$3/bin/python"; '
       'if [ -x "$py" ]; then "$py" -I -S -c "$7"; '
       "else echo 'no `ip` command (iproute2) and no python3 to read the interfaces with'; "
       f"exit {UNKNOWN}; fi; fi")
# /proc/net/tcp{,6}: `sl local_address rem_address st ...`, the port in hex after the last ':',
# state 0A = LISTEN. Printed as `ss -Htln` prints a line, for the one parser.
_PORTS = ("if command -v ss >/dev/null 2>&1; then ss -Htln; else found=; "
          "for f in /proc/net/tcp /proc/net/tcp6; do [ -r \"$f\" ] || continue; found=1; "
          "while read -r _ addr _ st _; do [ \"$st\" = 0A ] && echo \"LISTEN 0 0 *:$((0x${addr##*:})) *:*\"; "
          "done < \"$f\"; done; "
          "[ -n \"$found\" ] || { echo 'no ss command and no /proc/net/tcp'; "
          f"exit {UNKNOWN}; }}; fi")

# name -> shell line; "$1" hf_home, "$2" model folder name, "$3" venv, "$4" image, "$5" runtime,
# "$6" cache_dir, "$7" node_scripts/ifaddrs.py
_SECTIONS = {
    "hostname": _HOSTNAME,
    "user": "id -un",
    "ids": 'echo "$(id -u) $(id -g)"',  # containers run as this user (docker run --user)
    "home": "printenv HOME",
    "clock": "date +%s.%N",
    "cpus": "nproc",  # the cores this user may use: how many copy streams a node can feed
    "nvidia-smi": shlex.join(NVIDIA_SMI_QUERY_ARGV),
    "ibdev2netdev": "ibdev2netdev",
    "sysfs-roce": shlex.join(["sh", "-c", SYSFS_ROCE_SCRIPT]),
    "ip": _IP,
    # Link speed in Mb/s per interface (a down link or a virtual one cannot say: left empty).
    "net-speed": 'for d in /sys/class/net/*; do s=$(cat "$d/speed" 2>/dev/null) || s=; '
                 'echo "${d##*/} $s"; done',
    "meminfo": "cat /proc/meminfo",
    # df needs an existing path: walk up from the HF cache until one exists.
    "df": 'p=$1; while [ ! -e "$p" ]; do p=$(dirname "$p"); done; df -P -B1 -- "$p"',
    "ports": _PORTS,
    "docker-version": '[ "$5" = docker ] && docker version --format "{{.Server.Version}}"',
    "docker-runtimes": '[ "$5" = docker ] && docker info --format "{{json .Runtimes}}"',
    "image-id": '[ "$5" = docker ] && docker image inspect --format "{{.Id}}" "$4"',
    "vllm": '[ "$5" = native ] && "$3/bin/python" -c '
            '"import importlib.metadata as m; print(m.version(\'vllm\'))"',
    "model": 'ls -d "$1/hub/$2"/snapshots/*/config.json',
    # Files, bytes and partial downloads under blobs/: a worker with fewer bytes than the
    # head is partly synced, though its config.json is there.
    # Files in the caches that this user does not own (a container that ran as root wrote them):
    # sync, the hash cache and `hf cache delete` would fail on them. Metadata only, first few.
    "foreign-files": 'u=$(id -u); for d in "$1" "$6"; do [ -d "$d" ] && find "$d" -xdev ! -uid "$u" '
                     '-printf "%u %p\\n" 2>/dev/null; done | head -n 6',
    "model-blobs": 'd="$1/hub/$2/blobs"; [ -d "$d" ] || exit 1; find "$d" -type f -printf "%s %f\\n" '
                   '| awk \'{n++; s+=$1} /[.]incomplete$/ {p++} END {print n+0, s+0, p+0}\'',
}


def script(only: Iterable[str] | None = None) -> str:
    """The probe of every section, or of `only` these (a verb that needs a few facts fast)."""
    wanted = set(_SECTIONS if only is None else only)
    lines = ["# sparkops facts probe", 'section() { n=$1; c=$2; shift 2; echo "=== $n"; '
             '( eval "$c" ) 2>&1; echo "=== /$n rc=$?"; }']
    for name, command in _SECTIONS.items():
        if name in wanted:
            lines.append(f"section {name} {shlex.quote(command)} \"$@\"")
    return "\n".join(lines) + "\n"


def argv(hf_home: str, model_dir: str, venv: str, image: str, runtime: str,
         only: Iterable[str] | None = None, cache_dir: str = "") -> list[str]:
    return ["sh", "-c", script(only), "sparkops-facts", hf_home, model_dir, venv, image, runtime, cache_dir,
            source("ifaddrs.py")]


_SECTION = re.compile(r"^=== (\S+)\n(.*?)^=== /\1 rc=(\d+)$", re.MULTILINE | re.DOTALL)


def split_sections(text: str) -> dict[str, tuple[int, str]]:
    return {m.group(1): (int(m.group(3)), m.group(2).rstrip("\n")) for m in _SECTION.finditer(text)}

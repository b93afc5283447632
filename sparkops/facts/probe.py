"""One script that reads every fact of a node, so a node costs one round trip.

The script is fixed text built from constant argv; the only inputs (paths, image name)
arrive as positional parameters $1..$5, never interpolated into it. Each fact prints as
a section `=== NAME` ... `=== /NAME rc=N`, which `split_sections` takes apart.
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

from sparkops.facts.parsers import IP_ADDR_ARGV, NVIDIA_SMI_QUERY_ARGV, SYSFS_ROCE_SCRIPT

# name -> shell line; "$1" hf_home, "$2" model folder name, "$3" venv, "$4" image, "$5" runtime,
# "$6" cache_dir
_SECTIONS = {
    "hostname": "hostname",
    "user": "id -un",
    "ids": 'echo "$(id -u) $(id -g)"',  # containers run as this user (docker run --user)
    "home": "printenv HOME",
    "clock": "date +%s.%N",
    "cpus": "nproc",  # the cores this user may use: how many copy streams a node can feed
    "nvidia-smi": shlex.join(NVIDIA_SMI_QUERY_ARGV),
    "ibdev2netdev": "ibdev2netdev",
    "sysfs-roce": shlex.join(["sh", "-c", SYSFS_ROCE_SCRIPT]),
    "ip": shlex.join(IP_ADDR_ARGV),
    # Link speed in Mb/s per interface (a down link or a virtual one cannot say: left empty).
    "net-speed": 'for d in /sys/class/net/*; do s=$(cat "$d/speed" 2>/dev/null) || s=; '
                 'echo "${d##*/} $s"; done',
    "meminfo": "cat /proc/meminfo",
    # df needs an existing path: walk up from the HF cache until one exists.
    "df": 'p=$1; while [ ! -e "$p" ]; do p=$(dirname "$p"); done; df -P -B1 -- "$p"',
    "ports": "ss -Htln",
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
    return ["sh", "-c", script(only), "sparkops-facts", hf_home, model_dir, venv, image, runtime, cache_dir]


_SECTION = re.compile(r"^=== (\S+)\n(.*?)^=== /\1 rc=(\d+)$", re.MULTILINE | re.DOTALL)


def split_sections(text: str) -> dict[str, tuple[int, str]]:
    return {m.group(1): (int(m.group(3)), m.group(2).rstrip("\n")) for m in _SECTION.finditer(text)}

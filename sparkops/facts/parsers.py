"""Pure parsers for the hardware facts a node reports.

Each fact is an argv (or a fixed script) plus a parser of its output. Nothing
here runs a command: the caller runs the argv on a host and hands the text in.
Parsers raise ValueError naming the offending line rather than guessing, so a
format change shows up as an error and not as a column of N/A.
"""

from __future__ import annotations

import ipaddress
import json
import re

from sparkops.facts.types import DiskFree, Gpu, Interface, MemInfo, ModelBlobs, RoceLink

# --- nvidia-smi -------------------------------------------------------------

NVIDIA_SMI_QUERY_FIELDS = (
    "index",
    "name",
    "driver_version",
    "memory.total",
    "memory.used",
    "compute_cap",
)
NVIDIA_SMI_QUERY_ARGV = [
    "nvidia-smi",
    "--query-gpu=" + ",".join(NVIDIA_SMI_QUERY_FIELDS),
    "--format=csv,noheader,nounits",
]

# What nvidia-smi prints for a value NVML cannot give. GB10 prints these for
# every framebuffer field because its memory is unified with the CPU's.
_NOT_AVAILABLE = {"[n/a]", "n/a", "not supported", "[not supported]"}
_FIELD_ALIASES = {"gpu_name": "name"}


def _csv_header_name(cell: str) -> str:
    # A header cell reads "memory.total [MiB]" when units are on.
    return _FIELD_ALIASES.get(cell.split(" [")[0].strip(), cell.split(" [")[0].strip())


def _optional_mib(value: str, field: str, line: str) -> int | None:
    if value.lower() in _NOT_AVAILABLE:
        return None
    number = value.removesuffix("MiB").strip()
    if not number.isdigit():
        raise ValueError(f"nvidia-smi: {field} is {value!r}, not a MiB count, in line {line!r}")
    return int(number)


def parse_nvidia_smi_query(
    text: str, fields: tuple[str, ...] | list[str] = NVIDIA_SMI_QUERY_FIELDS
) -> list[Gpu]:
    """Parse `nvidia-smi --query-gpu=<fields> --format=csv[,noheader][,nounits]`.

    `fields` names the queried columns in order; a header line, if present, is
    skipped. Fields other than the six in NVIDIA_SMI_QUERY_FIELDS are ignored.
    """
    names = [_FIELD_ALIASES.get(f, f) for f in fields]
    if "index" not in names or "name" not in names:
        raise ValueError("nvidia-smi: the query must include index and name")
    gpus = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        cells = [c.strip() for c in line.split(",")]
        if [_csv_header_name(c) for c in cells] == names:
            continue
        if len(cells) != len(names):
            raise ValueError(
                f"nvidia-smi: expected {len(names)} comma-separated fields "
                f"({', '.join(names)}), got {len(cells)} in line {line!r}"
            )
        row = dict(zip(names, cells))
        if not row["index"].isdigit():
            raise ValueError(f"nvidia-smi: index {row['index']!r} is not a number in line {line!r}")
        cap = row.get("compute_cap")
        gpus.append(
            Gpu(
                index=int(row["index"]),
                name=row["name"],
                driver=row.get("driver_version", ""),
                memory_total_mib=_optional_mib(
                    row.get("memory.total", "[N/A]"), "memory.total", line
                ),
                memory_used_mib=_optional_mib(
                    row.get("memory.used", "[N/A]"), "memory.used", line
                ),
                compute_cap=None if cap is None or cap.lower() in _NOT_AVAILABLE else cap,
            )
        )
    return gpus


# --- ibdev2netdev -----------------------------------------------------------

# Trailing text is allowed: people pipe it through `column -t` and annotate.
_IBDEV_LINE = re.compile(r"^(\S+)\s+port\s+(\d+)\s+==>\s+(\S+)\s+\((Up|Down)\)")


def parse_ibdev2netdev(text: str) -> list[RoceLink]:
    """Parse `ibdev2netdev` lines like `rocep1s0f1 port 1 ==> enp1s0f1np1 (Up)`."""
    links = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        match = _IBDEV_LINE.match(line)
        if not match:
            raise ValueError(f"ibdev2netdev: unrecognised line {line!r}")
        hca, port, netdev, state = match.groups()
        links.append(RoceLink(hca=hca, port=int(port), netdev=netdev, up=state == "Up"))
    return links


# --- sysfs fallback when ibdev2netdev is not installed ------------------------

# Fixed text: the sysfs root is the only input and arrives as $1, never
# interpolated. Output is tab-separated because states ("4: ACTIVE") and GID
# types ("RoCE v2") contain spaces. Unused GID slots fail to read their type
# (EINVAL) and are skipped. LC_ALL=C keeps the glob order host-independent.
SYSFS_ROCE_SCRIPT = r"""LC_ALL=C
export LC_ALL
root=${1:-/sys}
for port_dir in "$root"/class/infiniband/*/ports/*; do
  [ -d "$port_dir" ] || continue
  hca=${port_dir%/ports/*}
  hca=${hca##*/}
  port=${port_dir##*/}
  state=$(cat "$port_dir/state" 2>/dev/null)
  netdevs=
  for n in "$root/class/infiniband/$hca/device/net/"*; do
    [ -e "$n" ] || continue
    netdevs="$netdevs${netdevs:+,}${n##*/}"
  done
  printf 'port\t%s\t%s\t%s\t%s\n' "$hca" "$port" "$state" "$netdevs"
  for t in "$port_dir"/gid_attrs/types/*; do
    [ -r "$t" ] || continue
    type=$(cat "$t" 2>/dev/null) || continue
    [ -n "$type" ] || continue
    idx=${t##*/}
    gid=$(cat "$port_dir/gids/$idx" 2>/dev/null)
    printf 'gid\t%s\t%s\t%s\t%s\t%s\n' "$hca" "$port" "$idx" "$type" "$gid"
  done
done
"""
SYSFS_ROCE_ARGV = ["sh", "-c", SYSFS_ROCE_SCRIPT]


def sysfs_roce_argv(root: str = "/sys") -> list[str]:
    """The sysfs walk against another root ("sh" fills $0, root is $1)."""
    return [*SYSFS_ROCE_ARGV, "sh", root]


def _ipv4_mapped(gid: str) -> str | None:
    try:
        mapped = ipaddress.IPv6Address(gid).ipv4_mapped
    except ValueError:
        return None
    return str(mapped) if mapped else None


def parse_sysfs_roce(text: str) -> tuple[list[RoceLink], dict[str, int]]:
    """Parse SYSFS_ROCE_SCRIPT output into links and the RoCE v2 IPv4 GID index per HCA.

    The index is the lowest one whose type is "RoCE v2" and whose GID is an
    IPv4-mapped address; 3 is common but it moves (per HCA, after netplan
    re-applies), so it is read rather than assumed.
    """
    links: list[RoceLink] = []
    gid_index: dict[str, int] = {}
    for raw in text.splitlines():
        if not raw.strip():
            continue
        cells = raw.rstrip("\n").split("\t")
        kind = cells[0]
        if kind == "port" and len(cells) == 5:
            _, hca, port, state, netdevs = cells
            netdev = netdevs.split(",")[0] if netdevs else ""
            links.append(RoceLink(hca, int(port), netdev, state.strip().endswith("ACTIVE")))
        elif kind == "gid" and len(cells) == 6:
            _, hca, _port, idx, gid_type, gid = cells
            if gid_type.strip() == "RoCE v2" and _ipv4_mapped(gid.strip()):
                gid_index[hca] = min(int(idx), gid_index.get(hca, int(idx)))
        else:
            raise ValueError(f"sysfs roce: unrecognised line {raw!r}")
    return links, gid_index


# --- ip -j addr -------------------------------------------------------------

IP_ADDR_ARGV = ["ip", "-j", "addr", "show"]


def parse_ip_addr(text: str) -> dict[str, Interface]:
    """Parse `ip -j addr show` into interfaces by name."""
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"ip -j addr: not JSON ({err})") from err
    if not isinstance(entries, list):
        raise ValueError("ip -j addr: expected a JSON list of interfaces")
    interfaces = {}
    for entry in entries:
        try:
            name = entry["ifname"]
            ipv4 = tuple(
                (a["local"], int(a["prefixlen"]))
                for a in entry.get("addr_info", [])
                if a.get("family") == "inet"
            )
            mac = entry.get("address") if entry.get("link_type") == "ether" else None
            interfaces[name] = Interface(name, entry["operstate"], int(entry["mtu"]), ipv4, mac)
        except (KeyError, TypeError) as err:
            raise ValueError(f"ip -j addr: interface entry missing {err}: {entry!r}") from err
    return interfaces


# --- /sys/class/net/<if>/speed ----------------------------------------------------


def parse_net_speed(text: str) -> dict[str, int]:
    """`<ifname> <speed>` lines (the probe's net-speed section) -> Mb/s per interface. Down or
    virtual links read -1 or nothing: they are left out rather than reported as 0."""
    speeds = {}
    for raw in text.splitlines():
        parts = raw.split()
        if not parts:
            continue
        if len(parts) > 2 or (len(parts) == 2 and not parts[1].lstrip("-").isdigit()):
            raise ValueError(f"net-speed: unrecognised line {raw!r}")
        if len(parts) == 2 and int(parts[1]) > 0:
            speeds[parts[0]] = int(parts[1])
    return speeds


# --- /proc/meminfo ------------------------------------------------------------


def parse_meminfo(text: str) -> MemInfo:
    """MemTotal and MemAvailable (both required), MemFree, Cached and Buffers, in bytes. On GB10
    this is the GPU's memory too."""
    values = {}
    for raw in text.splitlines():
        key, sep, rest = raw.strip().partition(":")
        if not sep:
            continue
        parts = rest.split()
        if parts and parts[0].isdigit():
            unit = 1024 if parts[1:] == ["kB"] else 1
            values[key] = int(parts[0]) * unit
    missing = [k for k in ("MemTotal", "MemAvailable") if k not in values]
    if missing:
        raise ValueError(f"meminfo: no {' or '.join(missing)} line")
    return MemInfo(values["MemTotal"], values["MemAvailable"], values.get("MemFree"), values.get("Cached"),
                   values.get("Buffers"))


# --- df -----------------------------------------------------------------------


def df_argv(path: str) -> list[str]:
    return ["df", "-P", "-B1", "--", path]


_DF_LINE = re.compile(r"^(.*?)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+%|-)\s+(.+)$")


def parse_model_blobs(text: str) -> ModelBlobs:
    """Parse the probe's `FILES BYTES INCOMPLETE` line for the model's blobs/ folder."""
    parts = text.split()
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"model blobs: expected 'files bytes incomplete', got {text.strip()[:80]!r}")
    files, size, incomplete = map(int, parts)
    return ModelBlobs(files=files, bytes=size, incomplete=incomplete)


def parse_ids(text: str) -> tuple[int, int]:
    """`UID GID` of the user a node's commands run as."""
    parts = text.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"ids: expected 'uid gid', got {text.strip()[:80]!r}")
    return int(parts[0]), int(parts[1])


def parse_foreign_files(text: str) -> tuple[str, ...]:
    """`OWNER PATH` lines of files in the caches that the user does not own."""
    return tuple(line for line in text.splitlines() if line.strip())


def parse_df(text: str) -> DiskFree:
    """Parse `df -P -B1 -- path`: total and available bytes of its filesystem."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 2:
        raise ValueError(f"df: expected a header and one line, got {len(lines)} lines")
    match = _DF_LINE.match(lines[1].strip())
    if not match:
        raise ValueError(f"df: unrecognised line {lines[1]!r}")
    _fs, total, _used, avail, _pct, mount = match.groups()
    return DiskFree(path=mount, total_bytes=int(total), free_bytes=int(avail))

"""How a model's bytes travel from the head to a worker (pure: argv only).

rsync runs on the head and reaches the worker over SSH at its RoCE address, so the bytes
take the cable, not the management network. The worker's host key is still checked
strictly, under the name the cluster file knows it by (`HostKeyAlias`). Files that are
absent or wrong go whole (`--whole-file`: rsync's delta search only costs CPU on a fast
link); files cut short by an interrupted copy get their missing tail (`--append-verify`,
which checks the whole file afterwards). `--inplace` writes to the final name, so even a
killed copy leaves a prefix that the next sync resumes from.
"""
from __future__ import annotations

import os
import re
import shlex

from ..errors import SparkopsError

# AES-GCM runs on the CPU's AES instructions (x86 AES-NI, Arm's crypto extension).
CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com"
_LITERAL = re.compile(r"Literal data: ([\d,.]+)")
_PROGRESS = re.compile(r"^\s*([\d,]+)\s+\d+%")


def ssh_command(node: dict, ssh: dict) -> list[str]:
    """The ssh client argv rsync uses for the hop head -> worker (the worker's SSH settings)."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "Compression=no", "-c", CIPHERS,
            "-o", f"ConnectTimeout={ssh.get('connect_timeout_s', 10)}",
            "-o", "StrictHostKeyChecking=" + ("yes" if ssh.get("strict_host_keys", True) else "accept-new"),
            "-o", f"HostKeyAlias={node['host']}"]
    if ssh.get("config_file"):
        argv += ["-F", os.path.expanduser(ssh["config_file"])]
    if ssh.get("known_hosts"):
        argv += ["-o", f"UserKnownHostsFile={os.path.expanduser(ssh['known_hosts'])}"]
    if node.get("key"):
        argv += ["-i", os.path.expanduser(node["key"]), "-o", "IdentitiesOnly=yes"]
    if node.get("port"):
        argv += ["-p", str(node["port"])]
    if node.get("user"):
        argv += ["-l", node["user"]]
    return argv


def cable_address(node: dict, facts, network: dict) -> str:
    """Where the head reaches a worker for bulk copies: its RoCE address when it has one (the
    200 Gb/s cable), else the address sparkops knows it by."""
    from ..facts.roce import select_roce
    try:
        return select_roce(facts, node, network).ip
    except SparkopsError:
        return node["host"]


def rsync_argv(ssh: list[str], src_dir: str, address: str, dest_dir: str, *, append: bool) -> list[str]:
    """argv of one rsync stream; the relative paths to copy arrive on stdin, NUL-separated."""
    return ["rsync", "-a", "--inplace", "--mkpath", "--from0", "--files-from=-", "--stats",
            "--info=progress2", "--append-verify" if append else "--whole-file",
            "-e", shlex.join(ssh), src_dir.rstrip("/") + "/", f"{address}:{dest_dir.rstrip('/')}/"]


def split(sizes: dict[str, int], streams: int) -> list[list[str]]:
    """Paths into at most `streams` lists of about equal bytes (largest first, greedy)."""
    buckets: list[tuple[int, list[str]]] = [(0, []) for _ in range(max(1, min(streams, len(sizes))))]
    for rel in sorted(sizes, key=lambda r: (-sizes[r], r)):
        i = min(range(len(buckets)), key=lambda b: buckets[b][0])
        load, items = buckets[i]
        buckets[i] = (load + sizes[rel], items + [rel])
    return [items for _, items in buckets if items]


def literal_bytes(stats: str) -> int:
    """Bytes rsync really sent (its --stats "Literal data"), summed over the output given."""
    return sum(int(m.group(1).replace(",", "").replace(".", "")) for m in _LITERAL.finditer(stats))


def progress_bytes(line: str) -> int | None:
    """Bytes done so far from one `--info=progress2` line, None for other lines."""
    m = _PROGRESS.match(line)
    return int(m.group(1).replace(",", "")) if m else None

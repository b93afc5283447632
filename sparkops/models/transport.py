"""How a model's bytes travel from the head to a worker (pure: what goes in which stream,
how many streams, and the argv that carries them).

Both transports run node_scripts/transfer.py: a sender on the head, and on the worker a
receiver that hashes what it writes, so that a copied file needs no second read.
  ssh  (the default) each stream is `ssh <worker's RoCE address> ... transfer.py receive`:
       the worker's SSH user, key and port, its host key checked strictly, every byte
       encrypted (one core's cipher per stream, at each end).
  tcp  one `transfer.py listen`, started on the worker over sparkops' own SSH connection,
       takes plain TCP connections on the worker's RoCE address only, for this sync only.
       Sender and receiver each prove they know a one-time secret that travels on stdin, and
       every frame carries an HMAC under a key of that connection with its sequence number,
       so nothing can be injected, dropped, replayed or reordered. No cipher: what NCCL
       already does on the same cable; the bytes can be read by anyone on the cable.
Either way the receiver writes only beneath the model folder (it never follows a link there)
and the check after the copy holds every file to the head's manifest, which travels over SSH.
"""
from __future__ import annotations

import math
import shlex

from sparkops.node_scripts import python_argv

TRANSPORTS = ("ssh", "tcp")
MAX_STREAMS = 16
# What one stream carries, about, on a Spark-class core: SSH's AES-GCM, or (tcp) the
# sha256 that each end computes (the CPU's SHA instructions). The link divided by this is
# the number of streams that could fill it.
STREAM_BYTES_S = {"ssh": 1.0e9, "tcp": 2.0e9}


def stream_count(transport: str, cpus: list[int | None], link_mbps: int | None, files: int) -> int:
    """Streams for one worker: enough to fill the link, at most half the cores of the smaller
    of the two nodes (a stream keeps a core busy at each end, and the kernel's network and
    disk work needs the rest) but at least two (one stream's disk write overlaps the other's
    network read even on a small machine), never more than the files to copy."""
    known = [c for c in cpus if c]
    by_cores = min(known) // 2 if known else 2
    by_link = math.ceil(link_mbps * 1e6 / 8 / STREAM_BYTES_S[transport]) if link_mbps else MAX_STREAMS
    return max(1, min(max(2, min(by_cores, by_link)), MAX_STREAMS, files or 1))


def entries(manifest: dict, check: dict) -> tuple[list[dict], list[dict]]:
    """(files, links) to send: a missing or wrong file whole, a file cut short from where it
    stops (check's `partial`: its current size), a bad link as a link."""
    files = []
    for rel in sorted({*check["missing"], *check["wrong"], *check["partial"]} & set(manifest["files"])):
        size, sha = manifest["files"][rel]
        files.append({"rel": rel, "offset": check["partial"].get(rel, 0), "size": size, "sha256": sha})
    links = [{"link": rel, "target": manifest["links"][rel]} for rel in sorted(check["links"])]
    return files, links


def plan_streams(files: list[dict], links: list[dict], streams: int) -> list[list[dict]]:
    """Files into at most `streams` lists of about equal bytes (largest first, greedy); the
    links ride with the lightest."""
    buckets: list[tuple[int, list[dict]]] = [(0, []) for _ in range(max(1, min(streams, len(files))))]
    for entry in sorted(files, key=lambda e: (-(e["size"] - e["offset"]), e["rel"])):
        i = min(range(len(buckets)), key=lambda b: buckets[b][0])
        load, items = buckets[i]
        buckets[i] = (load + entry["size"] - entry["offset"], items + [entry])
    lightest = min(range(len(buckets)), key=lambda b: buckets[b][0])
    buckets[lightest] = (buckets[lightest][0], buckets[lightest][1] + links)
    return [items for _, items in buckets if items]


def receive_over_ssh(ssh: list[str], address: str, dest: str, cache: str) -> list[str]:
    """argv the head runs for one ssh stream: the receiver, on the worker, through ssh."""
    return [*ssh, address, shlex.join(python_argv("transfer.py", "receive", dest, "--cache", cache))]


def listen_argv(dest: str, cache: str, address: str, streams: int) -> list[str]:
    """argv of the tcp receiver, run on the worker over sparkops' SSH connection."""
    return python_argv("transfer.py", "listen", dest, "--cache", cache, "--address", address,
                       "--streams", str(streams))


def send_argv() -> list[str]:
    """argv of the sender, run on the head; its job arrives on stdin."""
    return python_argv("transfer.py", "send")

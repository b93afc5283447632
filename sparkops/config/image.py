"""The serving image's names. `cluster.image` is a name to build (`sparkops/vllm:spark`) or a
prebuilt image by digest (`nvcr.io/org/vllm@sha256:<64 hex>`), which `inv build` pulls on
the head and copies to the workers.

`docker load` does not bring back a digest (only tags travel in `docker save`), so a worker
that got the image from the head could not find it by `repo@sha256:...`. Every node therefore
runs, inspects and copies a digest image under one local tag derived from the digest
(`repo:sparkops-<first 12 hex digits>`), which `inv build` sets on the head after the pull."""
from __future__ import annotations

import re

# REPO[:TAG]@sha256:HEX; REPO may hold a registry with a port (host:5000/org/name).
_DIGEST = re.compile(r"^(?P<ref>[A-Za-z0-9][A-Za-z0-9._/:-]*)@sha256:(?P<hex>[0-9a-f]{64})$")


def is_digest(image: str) -> bool:
    return _DIGEST.match(image) is not None


def repository(ref: str) -> str:
    """`host:5000/org/name:tag` -> `host:5000/org/name` (a ':' after the last '/' is a tag)."""
    head, slash, last = ref.rpartition("/")
    return head + slash + last.split(":", 1)[0]


def local_name(image: str) -> str:
    """The name every node knows the image by: the image itself, or for a digest image the
    local tag derived from its digest."""
    match = _DIGEST.match(image)
    if match is None:
        return image
    return f"{repository(match.group('ref'))}:sparkops-{match.group('hex')[:12]}"

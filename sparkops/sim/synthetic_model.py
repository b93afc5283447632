"""A synthetic model in a Hugging Face cache folder, for sync tests and benchmarks:

    models--sparkops--synthetic/blobs/<sha256>              weight shards + small json files
    models--sparkops--synthetic/snapshots/<rev>/<name>      relative symlinks into blobs/
    models--sparkops--synthetic/refs/main                   <rev>

Contents are real, distinct bytes (a random pool, rotated per file, behind a per-file header),
written at disk speed: a 2 GB model takes seconds. Not a loadable model: no vLLM serves it.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from sparkops.node_scripts import hf_cache

REPO = "sparkops/synthetic"
POOL = 8 << 20


def make_synthetic_model(root: Path, total_bytes: int, shards: int, seed: int = 0) -> dict[str, int]:
    """Write the folder at `root` (the models--... directory); returns {name: size}."""
    pool = hashlib.shake_256(f"sparkops-synthetic-{seed}".encode()).digest(POOL)
    root = Path(root)
    size = max(1, total_bytes // shards)
    files = {f"model-{i + 1:05d}-of-{shards:05d}.safetensors": size for i in range(shards)}

    def shard(i: int, name: str) -> Iterator[bytes]:
        header = json.dumps({"file": name, "seed": seed}).encode().ljust(64)
        yield header
        left, offset = size - len(header), (i * 7919) % POOL
        while left > 0:
            chunk = pool[offset:offset + min(left, POOL - offset)]
            yield chunk
            left -= len(chunk)
            offset = 0

    digests = {name: hf_cache.write_blob(root, shard(i, name))[0] for i, name in enumerate(files)}
    small = {"config.json": {"architectures": ["SyntheticForTests"], "shards": shards},
             "model.safetensors.index.json": {"weight_map": {n: n for n in files}},
             "generation_config.json": {"seed": seed}}
    for name, doc in small.items():
        data = json.dumps(doc, indent=1).encode()
        digests[name] = hf_cache.write_blob(root, [data])[0]
        files[name] = len(data)
    hf_cache.link_snapshot(root, hf_cache.content_commit(digests), digests)
    return files

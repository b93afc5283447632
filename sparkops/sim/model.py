"""A synthetic model shaped like a Hugging Face cache folder, for sync tests and benchmarks:

    models--sparkops--synthetic/blobs/<sha256>              weight shards + small json files
    models--sparkops--synthetic/snapshots/<rev>/<name>      relative symlinks into blobs/
    models--sparkops--synthetic/refs/main                   <rev>

Contents are real, distinct bytes (a random pool, rotated per file, behind a per-file header),
written at disk speed: a 2 GB model takes seconds. Not a loadable model: no vLLM serves it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

REPO = "sparkops/synthetic"
POOL = 8 << 20


def make_synthetic_model(root: Path, total_bytes: int, shards: int, seed: int = 0) -> dict:
    """Write the folder at `root` (the models--... directory); returns {name: size}."""
    pool = hashlib.shake_256(f"sparkops-synthetic-{seed}".encode()).digest(POOL)
    root = Path(root)
    blobs = root / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    size = max(1, total_bytes // shards)
    files = {f"model-{i + 1:05d}-of-{shards:05d}.safetensors": size for i in range(shards)}
    digests = {}
    for i, name in enumerate(files):
        digest, tmp = hashlib.sha256(), blobs / f".{name}.tmp"
        with open(tmp, "wb") as out:
            header = json.dumps({"file": name, "seed": seed}).encode().ljust(64)
            digest.update(header)
            out.write(header)
            left, offset = size - len(header), (i * 7919) % POOL
            while left > 0:
                chunk = pool[offset:offset + min(left, POOL - offset)]
                digest.update(chunk)
                out.write(chunk)
                left -= len(chunk)
                offset = 0
        digests[name] = digest.hexdigest()
        os.replace(tmp, blobs / digests[name])
    small = {"config.json": {"architectures": ["SyntheticForTests"], "shards": shards},
             "model.safetensors.index.json": {"weight_map": {n: n for n in files}},
             "generation_config.json": {"seed": seed}}
    for name, doc in small.items():
        data = json.dumps(doc, indent=1).encode()
        digests[name] = hashlib.sha256(data).hexdigest()
        (blobs / digests[name]).write_bytes(data)
        files[name] = len(data)
    rev = hashlib.sha1(json.dumps(digests, sort_keys=True).encode()).hexdigest()
    snapshot = root / "snapshots" / rev
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, digest in digests.items():
        link = snapshot / name
        if not link.is_symlink():
            link.symlink_to(Path("..", "..", "blobs", digest))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(rev)
    return files

"""huggingface_hub's cache layout, written by hand: importing a folder of model files.

    hub/models--org--name/blobs/<sha256>              the bytes, once
    hub/models--org--name/snapshots/<commit>/<path>   relative symlinks into blobs/
    hub/models--org--name/refs/<branch>               the commit a branch name means

With that layout in place, vLLM and `snapshot_download(..., local_files_only=True)` find the
model offline, exactly as if the hub had put it there.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import SparkopsError
from ..facts.gather import model_dir_name

COMMIT = re.compile(r"^[0-9a-f]{40}$")
SKIP_DIRS = {".cache", ".git", ".huggingface"}  # `hf download --local-dir` keeps metadata in .cache
CHUNK = 4 << 20


@dataclass(frozen=True)
class Imported:
    snapshot: Path
    files: int
    bytes: int
    copied_bytes: int


def repo_dir(hf_home: Path, repo: str) -> Path:
    return Path(hf_home) / "hub" / model_dir_name(repo)


def model_files(src: Path, allow: list[str] | None, ignore: list[str] | None) -> list[str]:
    """Relative paths of the files under src that the profile's patterns take."""
    from huggingface_hub.utils import filter_repo_objects
    found = []
    for top, dirs, names in os.walk(src, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        found += [os.path.relpath(os.path.join(top, n), src) for n in sorted(names)]
    return list(filter_repo_objects(found, allow_patterns=allow or None, ignore_patterns=ignore or None))


def _copy_hashed(src: Path, blobs: Path) -> tuple[str, int, int]:
    """Copy src into blobs/ under its sha256 (one read); -> (sha256, size, bytes written)."""
    digest, size = hashlib.sha256(), 0
    fd, tmp = tempfile.mkstemp(prefix=".import-", suffix=".incomplete", dir=blobs)
    try:
        with open(src, "rb") as reader, os.fdopen(fd, "wb") as writer:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                writer.write(chunk)
                size += len(chunk)
        blob = blobs / digest.hexdigest()
        if blob.is_file() and blob.stat().st_size == size:
            return digest.hexdigest(), size, 0
        os.replace(tmp, blob)
        return digest.hexdigest(), size, size
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def import_local_dir(src: Path, hf_home: Path, repo: str, revision: str | None,
                     allow: list[str] | None = None, ignore: list[str] | None = None,
                     progress=None) -> Imported:
    src = Path(src).expanduser()
    if not src.is_dir():
        raise SparkopsError(f"--local-dir {src} is not a directory", step="download")
    rels = model_files(src, allow, ignore)
    if "config.json" not in rels:
        raise SparkopsError(f"{src} holds no config.json (of {len(rels)} file(s) the profile's patterns "
                            "take): not a model folder", step="download",
                            fix=f"point --local-dir at the folder `hf download {repo} --local-dir DIR` made")
    root = repo_dir(hf_home, repo)
    blobs = root / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    digests, total, copied = {}, 0, 0
    for i, rel in enumerate(rels, 1):
        digests[rel], size, wrote = _copy_hashed(src / rel, blobs)
        total, copied = total + size, copied + wrote
        if progress and (size > 100e6 or i == len(rels)):
            progress.say(f"      imported {i}/{len(rels)} files, {total / 1e9:.2f} GB")
    # A pinned commit names the snapshot; a branch or tag gets a commit id derived from the
    # content (same files, same id) and a ref pointing to it, as the hub writes refs/main.
    pinned = revision if revision and COMMIT.match(revision) else None
    commit = pinned or hashlib.sha1(json.dumps(digests, sort_keys=True).encode()).hexdigest()
    snapshot = root / "snapshots" / commit
    for rel, digest in digests.items():
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(blobs / digest, link.parent)
        if link.is_symlink() and os.readlink(link) == target:
            continue
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(target)
    if not pinned:
        ref = root / "refs" / (revision or "main")
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)  # no newline, like huggingface_hub writes it
    return Imported(snapshot, len(digests), total, copied)

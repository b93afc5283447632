"""huggingface_hub's cache layout, for a model sparkops puts there itself (an offline import,
the smoke model, a synthetic model for tests):

    hub/models--org--name/blobs/<sha256>              the bytes, once
    hub/models--org--name/snapshots/<commit>/<path>   relative symlinks into blobs/
    hub/models--org--name/refs/<branch>               the commit a branch name means

With that layout in place, vLLM and `snapshot_download(..., local_files_only=True)` find the
model offline, exactly as if the hub had put it there. Standard library only: node-side
scripts (the smoke model's builder) use it as well as the controller.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

CHUNK = 4 << 20


def repo_folder(repo: str) -> str:
    """The cache folder of a model repo: 'org/name' -> 'models--org--name'."""
    return "models--" + repo.replace("/", "--")


def repo_dir(hf_home: str | os.PathLike[str], repo: str) -> Path:
    """<hf_home>/hub/models--org--name."""
    return Path(hf_home) / "hub" / repo_folder(repo)


def content_commit(digests: Mapping[str, str]) -> str:
    """A 40-hex commit id derived from the files' sha256 (same files, same id), for a model
    that has no commit of its own."""
    return hashlib.sha1(json.dumps(dict(digests), sort_keys=True).encode()).hexdigest()


def write_blob(repo: Path, chunks: Iterable[bytes]) -> tuple[str, int, int]:
    """Stream bytes into blobs/<sha256> (one pass: hashed while written, renamed into place
    when whole). Returns (sha256, size, bytes written: 0 when the blob was already there)."""
    blobs = Path(repo) / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    # `.incomplete`, as huggingface_hub names its own partial blobs: preflight counts them.
    fd, tmp = tempfile.mkstemp(prefix=".sparkops-", suffix=".incomplete", dir=blobs)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        blob = blobs / digest.hexdigest()
        if blob.is_file() and blob.stat().st_size == size:
            return digest.hexdigest(), size, 0
        os.chmod(tmp, 0o644)
        os.replace(tmp, blob)
        return digest.hexdigest(), size, size
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    for chunk in file_chunks(path):
        digest.update(chunk)
    return digest.hexdigest()


def file_chunks(path: str | os.PathLike[str]) -> Iterable[bytes]:
    with open(path, "rb") as reader:
        while chunk := reader.read(CHUNK):
            yield chunk


def link_snapshot(repo: Path, commit: str, files: Mapping[str, str], ref: str | None = "main") -> Path:
    """snapshots/<commit>/<path> -> ../../blobs/<sha256> for every {path: sha256}, and
    refs/<ref> naming the commit (none for ref=None: a pinned commit needs no ref)."""
    snapshot = Path(repo) / "snapshots" / commit
    for rel, digest in files.items():
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(Path(repo) / "blobs" / digest, link.parent)
        if link.is_symlink() and os.readlink(link) == target:
            continue
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(target)
    if ref is not None:
        refs = Path(repo) / "refs" / ref
        refs.parent.mkdir(parents=True, exist_ok=True)
        refs.write_text(commit)  # no newline, like huggingface_hub writes it
    return snapshot

"""`inv download --local-dir DIR`: a folder of model files (`hf download --local-dir` made it
elsewhere) imported into the head's Hugging Face cache, in huggingface_hub's own layout
(sparkops.node_scripts.hf_cache), so that vLLM finds it offline as if the hub had put it there.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from sparkops.base.errors import SparkopsError
from sparkops.base.progress import Progress
from sparkops.base.units import gb
from sparkops.node_scripts import hf_cache

COMMIT = re.compile(r"^[0-9a-f]{40}$")
SKIP_DIRS = {".cache", ".git", ".huggingface"}  # `hf download --local-dir` keeps metadata in .cache


@dataclass(frozen=True)
class Imported:
    snapshot: Path
    files: int
    bytes: int
    copied_bytes: int


def model_files(src: Path, allow: list[str] | None, ignore: list[str] | None) -> list[str]:
    """Relative paths of the files under src that the profile's patterns take."""
    from huggingface_hub.utils import filter_repo_objects
    found = []
    for top, dirs, names in os.walk(src, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        found += [os.path.relpath(os.path.join(top, n), src) for n in sorted(names)]
    return list(filter_repo_objects(found, allow_patterns=allow or None, ignore_patterns=ignore or None))


def import_local_dir(src: Path, hf_home: Path, repo: str, revision: str | None,
                     allow: list[str] | None = None, ignore: list[str] | None = None,
                     progress: Progress | None = None) -> Imported:
    src = Path(src).expanduser()
    if not src.is_dir():
        raise SparkopsError(f"--local-dir {src} is not a directory", step="download")
    rels = model_files(src, allow, ignore)
    if "config.json" not in rels:
        raise SparkopsError(f"{src} holds no config.json (of {len(rels)} file(s) the profile's patterns "
                            "take): not a model folder", step="download",
                            fix=f"point --local-dir at the folder `hf download {repo} --local-dir DIR` made")
    root = hf_cache.repo_dir(hf_home, repo)
    sizes = {rel: (src / rel).stat().st_size for rel in rels}
    meter = progress.meter("      imported", sum(sizes.values()), amount=gb, every=5.0) if progress else None
    digests, total, copied = {}, 0, 0
    for rel in rels:
        digests[rel], size, wrote = hf_cache.write_blob(root, hf_cache.file_chunks(src / rel))
        total, copied = total + size, copied + wrote
        if meter:
            meter.update(total)
    # A pinned commit names the snapshot; a branch or tag gets a commit id derived from the
    # content (same files, same id) and a ref pointing to it, as the hub writes refs/main.
    pinned = revision if revision and COMMIT.match(revision) else None
    commit = pinned or hf_cache.content_commit(digests)
    snapshot = hf_cache.link_snapshot(root, commit, digests, ref=None if pinned else (revision or "main"))
    return Imported(snapshot, len(digests), total, copied)


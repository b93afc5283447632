"""What a model's Hugging Face cache folder holds: every file's size and sha256, every
symlink's target. Stdlib only: sparkops runs this very file on the nodes with `python3 -c`.

    scan  ROOT --cache FILE [--full]          the head: print the manifest as JSON
    check ROOT --cache FILE [--full] < MANIFEST  a worker: print what differs from it, and the
                                              free disk space where the files would go
    prune ROOT < PATHS                        delete these relative paths (wrong copies)

Hashing is the slow part (about 1 GB/s), so each node keeps a cache of the hashes it
computed, keyed by (size, mtime, ctime, inode): a file whose key is unchanged is not read
again. Any write to a file changes its ctime, even when mtime is put back, so only bit rot
under an unchanged inode slips through: `--full` hashes everything. transfer.py hashes what
it writes and appends those entries to `<cache>.received`, which the next load takes in: a
copied file is not read back.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import sys

SKIP_SUFFIXES = (".incomplete", ".lock")  # huggingface_hub's own unfinished downloads
CHUNK = 4 << 20
SHA256_NAME = re.compile(r"^[0-9a-f]{64}$")
JOURNAL = ".received"  # transfer.py's entries for files it wrote (same name there)
# hashlib releases the GIL on large buffers: threads hash files on several cores at once.
THREADS = max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def walk(root: str) -> tuple[dict[str, os.stat_result], dict[str, str]]:
    """Regular files {relative path: stat} and symlinks {relative path: target} under root."""
    files, links = {}, {}
    for top, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names) + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            path = os.path.join(top, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if os.path.islink(path):
                links[rel] = os.readlink(path)
            elif os.path.isfile(path) and not name.endswith(SKIP_SUFFIXES):
                files[rel] = st
    return files, links


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class HashCache:
    """{relative path: [size, mtime_ns, ctime_ns, inode, sha256]}, saved atomically."""

    def __init__(self, path: str | None, full: bool):
        self.path, self.full, self.changed, self.hashed_bytes = path, full, False, 0
        self.entries: dict[str, list] = {}
        if path:
            try:
                with open(path) as handle:
                    self.entries = json.load(handle)
            except (OSError, ValueError):
                self.entries = {}
            self._take_journal(path + JOURNAL)

    def _take_journal(self, journal: str) -> None:
        try:
            with open(journal) as handle:
                lines = handle.readlines()
        except OSError:
            return
        for line in lines:
            try:
                item = json.loads(line)
                self.entries[item["rel"]] = item["entry"]
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a killed copy
        self.changed = True  # saving folds the journal in and removes it

    def sha256(self, root: str, rel: str, st: os.stat_result) -> str:
        return self.sha256_many(root, {rel: st})[rel]

    def sha256_many(self, root: str, stats: dict[str, os.stat_result]) -> dict[str, str]:
        """{rel: sha256}: cached where the file's key is unchanged, else hashed (in parallel)."""
        out, todo = {}, {}
        for rel, st in stats.items():
            key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
            cached = self.entries.get(rel)
            if not self.full and cached and cached[:4] == key:
                out[rel] = cached[4]
            else:
                todo[rel] = key
        big_first = sorted(todo, key=lambda r: -todo[r][0])
        with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
            digests = pool.map(lambda r: sha256_file(os.path.join(root, r)), big_first)
            for rel, digest in zip(big_first, digests):
                out[rel] = digest
                self.entries[rel] = [*todo[rel], digest]
                self.hashed_bytes += todo[rel][0]
                self.changed = True
        return out

    def save(self, keep: dict) -> None:
        self.entries = {k: v for k, v in self.entries.items() if k in keep}
        if not self.path or not self.changed:
            return
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        tmp = f"{self.path}.tmp{os.getpid()}"
        with open(tmp, "w") as handle:
            json.dump(self.entries, handle)
        os.replace(tmp, self.path)
        try:
            os.unlink(self.path + JOURNAL)
        except FileNotFoundError:
            pass


def scan(root: str, cache_path: str | None, full: bool = False) -> dict:
    """The manifest of root; `problems` lists what makes this copy unfit to be the source."""
    if not os.path.isdir(root):
        return {"root": root, "files": {}, "links": {}, "problems": [f"{root} does not exist"]}
    files, links = walk(root)
    cache = HashCache(cache_path, full)
    digests = cache.sha256_many(root, files)
    out = {rel: (st.st_size, digests[rel]) for rel, st in files.items()}
    cache.save(out)
    problems = []
    for rel, (_, digest) in out.items():
        name = os.path.basename(rel)
        if rel.startswith("blobs/") and SHA256_NAME.match(name) and name != digest:
            problems.append(f"{rel}: content does not match its name (sha256 {digest[:12]}...): "
                            f"a corrupt download")
    for rel, target in links.items():
        resolved = os.path.normpath(os.path.join(os.path.dirname(rel), target))
        if os.path.isabs(target) or resolved.startswith("..") or resolved not in out:
            problems.append(f"{rel} -> {target}: does not point to a file of this folder")
    return {"root": root, "files": out, "links": links, "problems": problems,
            "bytes": sum(size for size, _ in out.values()), "hashed_bytes": cache.hashed_bytes}


def free_space(path: str) -> tuple[str, int, int]:
    """(existing directory the files would land on, free bytes, total bytes)."""
    while not os.path.exists(path):
        path = os.path.dirname(path) or "/"
    st = os.statvfs(path)
    return path, st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def check(root: str, expected: dict, cache_path: str | None, full: bool = False) -> dict:
    """How this copy differs from `expected` (a scan of the source), and what fixing it needs.

    missing: absent; partial: a shorter file (an interrupted copy, resumed by appending);
    wrong: same size or longer with other content, or a file where a link belongs (deleted,
    then copied whole); links: symlinks absent or pointing elsewhere; extra: here only."""
    files, links = walk(root) if os.path.isdir(root) else ({}, {})
    cache = HashCache(cache_path, full)
    missing, partial, wrong, bad_links, need = [], {}, [], [], 0
    same_size = {rel: files[rel] for rel, (size, _) in expected["files"].items()
                 if rel in files and files[rel].st_size == size}
    digests = cache.sha256_many(root, same_size)  # only these can be right: hash no others
    for rel, (size, digest) in expected["files"].items():
        st = files.get(rel)
        if st is None:
            missing.append(rel)
            need += size
        elif st.st_size < size:
            partial[rel] = st.st_size
            need += size - st.st_size
        elif st.st_size > size or digests[rel] != digest:
            wrong.append(rel)
            need += max(0, size - st.st_size)
    for rel, target in expected["links"].items():
        if links.get(rel) != target:
            bad_links.append(rel)
            if rel in files:
                wrong.append(rel)
    cache.save(expected["files"])
    extra = sorted(set(files) - set(expected["files"]) | set(links) - set(expected["links"]))
    where, free, total = free_space(root)
    return {"missing": missing, "partial": partial, "wrong": wrong, "links": bad_links,
            "extra": extra, "need_bytes": need, "free_bytes": free, "total_bytes": total,
            "fs_path": where, "hashed_bytes": cache.hashed_bytes,
            "verified": not (missing or partial or wrong or bad_links)}


def prune(root: str, rels: list[str]) -> list[str]:
    """Delete these paths under root (never outside it); returns what was deleted."""
    done = []
    for rel in rels:
        path = os.path.normpath(os.path.join(root, rel))
        if not path.startswith(os.path.normpath(root) + os.sep):
            continue
        if os.path.lexists(path) and not (os.path.isdir(path) and not os.path.islink(path)):
            os.unlink(path)
            done.append(rel)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sparkops-manifest")
    parser.add_argument("command", choices=["scan", "check", "prune"])
    parser.add_argument("root")
    parser.add_argument("--cache", help="hash cache file of this node")
    parser.add_argument("--full", action="store_true", help="hash every file, ignore the cache")
    args = parser.parse_args(argv)
    root = os.path.expanduser(args.root)
    cache = os.path.expanduser(args.cache) if args.cache else None
    if args.command == "scan":
        result = scan(root, cache, args.full)
    elif args.command == "check":
        result = check(root, json.load(sys.stdin), cache, args.full)
    else:
        result = {"deleted": prune(root, json.load(sys.stdin))}
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

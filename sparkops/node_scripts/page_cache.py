"""Evict a model folder's files from the page cache, without root. Stdlib only: sparkops runs
this very file on the nodes with `python3 -c`.

    evict ROOT    every regular file under ROOT: written back if dirty (fdatasync), then
                  posix_fadvise(DONTNEED); prints one JSON line: files, bytes, the bytes of
                  them resident in the page cache before and after (mincore), and
                  /proc/meminfo before and after

Why: on unified memory (DGX Spark) vLLM's start-up check reads CUDA's free memory, which
counts the page cache as used; right after a download or sync the cache holds the model
(checks/memory.py). NVIDIA's advice, `echo 3 > /proc/sys/vm/drop_caches`, needs root; dropping
the model's own clean pages does not.

No link beneath ROOT is followed: a snapshot's links point into blobs/, which is walked
itself, and a link that leads out of the folder is left alone (files are opened relative to
their directory with O_NOFOLLOW). ROOT itself may be reached through links (an HF cache on
another disk). Pages that a process has mapped stay: DONTNEED drops only unmapped clean ones.
"""
from __future__ import annotations

import ctypes
import json
import mmap
import os
import stat
import sys

WINDOW = 1 << 30  # mincore looks at this much of a file at a time (a multiple of every page size)
MAX_NAMED = 5  # unreadable files named in the report; the rest are counted


def meminfo() -> str:
    try:
        with open("/proc/meminfo") as f:
            return f.read()
    except OSError:
        return ""


class Residency:
    """How many bytes of an open file are in the page cache: mmap + mincore through libc.
    Since Linux 5.0 mincore tells the truth about a file's pages only to its owner (or root,
    or a writer); for anyone else it says every page is resident, so those files are not
    measured (None)."""

    def __init__(self) -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.mmap.restype = ctypes.c_void_p
            libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                  ctypes.c_long]
            libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
            libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
            self.libc: ctypes.CDLL | None = libc
        except (OSError, AttributeError):
            self.libc = None
        self.failed = ctypes.c_void_p(-1).value  # MAP_FAILED

    def measurable(self, st: os.stat_result) -> bool:
        return self.libc is not None and (os.geteuid() in (0, st.st_uid))

    def resident(self, fd: int, size: int) -> int | None:
        libc = self.libc
        if libc is None:
            return None
        page = mmap.PAGESIZE
        pages_in = 0
        for offset in range(0, size, WINDOW):
            length = min(WINDOW, size - offset)
            addr = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, offset)
            if addr is None or addr == self.failed:
                return None
            try:
                count = (length + page - 1) // page
                vec = ctypes.create_string_buffer(count)
                if libc.mincore(addr, length, vec) != 0:
                    return None
                # Bit 0 of each byte: the page is resident; the other bits are reserved (zero).
                pages_in += count - vec.raw.count(0)
            finally:
                libc.munmap(addr, length)
        return min(pages_in * page, size)


def evict(root: str) -> dict:
    report: dict = {"root": root, "exists": False, "files": 0, "bytes": 0, "resident_before": 0,
                    "resident_after": 0, "unmeasured": 0, "links_skipped": 0, "unreadable": [],
                    "unreadable_count": 0, "meminfo_before": meminfo()}
    top = os.path.realpath(root)
    residency = Residency()
    if os.path.isdir(top):
        report["exists"] = True
        # fwalk with follow_symlinks=False: directories are opened relative to their parent
        # and checked to be the directory listed, so a link swapped in cannot lead out.
        for _, dirs, names, dir_fd in os.fwalk(top, follow_symlinks=False):
            # fwalk lists a link to a directory among the directories, and does not enter it.
            report["links_skipped"] += sum(1 for d in dirs if is_link(d, dir_fd))
            for name in names:
                evict_one(name, dir_fd, residency, report)
    report["meminfo_after"] = meminfo()
    return report


def evict_one(name: str, dir_fd: int, residency: Residency, report: dict) -> None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if is_link(name, dir_fd):
            report["links_skipped"] += 1
        else:
            note_unreadable(report, f"{name}: {exc.strerror}")
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return
        measured = residency.measurable(st)
        before = residency.resident(fd, st.st_size) if measured else None
        try:
            os.fdatasync(fd)  # dirty pages (a file just synced) cannot be dropped until written
        except OSError:
            pass
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError as exc:  # a filesystem that cannot: reported, the other files still go
            note_unreadable(report, f"{name}: posix_fadvise: {exc.strerror}")
            return
        after = residency.resident(fd, st.st_size) if measured else None
        report["files"] += 1
        report["bytes"] += st.st_size
        if before is None or after is None:
            report["unmeasured"] += 1
        else:
            report["resident_before"] += before
            report["resident_after"] += after
    finally:
        os.close(fd)


def note_unreadable(report: dict, what: str) -> None:
    report["unreadable_count"] += 1
    if len(report["unreadable"]) < MAX_NAMED:
        report["unreadable"].append(what)


def is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "evict":
        print("usage: page_cache.py evict ROOT", file=sys.stderr)
        return 2
    print(json.dumps(evict(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

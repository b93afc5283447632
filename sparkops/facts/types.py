"""Typed results of the fact parsers: plain frozen values, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    driver: str  # "" when driver_version was not queried
    memory_total_mib: int | None  # None on GB10: unified memory has no framebuffer size
    memory_used_mib: int | None
    compute_cap: str | None


@dataclass(frozen=True)
class RoceLink:
    hca: str
    port: int
    netdev: str
    up: bool


@dataclass(frozen=True)
class Interface:
    name: str
    state: str
    mtu: int
    ipv4: tuple[tuple[str, int], ...]
    mac: str | None


@dataclass(frozen=True)
class MemInfo:
    """/proc/meminfo, in bytes. On unified memory (GB10, GH200) CUDA's free memory is close to
    `free_bytes` (MemFree): the page cache counts as used there, though the kernel would give
    it back. None: the line was not in the text (recorded samples often quote a few lines)."""
    total_bytes: int
    available_bytes: int
    free_bytes: int | None = None
    cached_bytes: int | None = None  # Cached: the page cache (file pages), reclaimable when clean
    buffers_bytes: int | None = None


@dataclass(frozen=True)
class DiskFree:
    path: str
    total_bytes: int
    free_bytes: int


@dataclass(frozen=True)
class ModelBlobs:
    """The model's `blobs/` folder in a node's HF cache: what a sync or download left there."""
    files: int
    bytes: int
    incomplete: int  # huggingface_hub's `*.incomplete` partial downloads


@dataclass(frozen=True)
class NcclReport:
    transports: set[str] = field(default_factory=set)
    ib_devices: list[str] = field(default_factory=list)
    socket_ifaces: list[str] = field(default_factory=list)
    gdr: bool | None = None
    nccl_version: str | None = None
    errors: list[str] = field(default_factory=list)
    fell_back_to_socket: bool = False

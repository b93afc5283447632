"""Sizes as people read them in progress lines and errors."""
from __future__ import annotations


def gb(n: float) -> str:
    """Decimal units, as disks and `df -H` count: '65.26 GB', '512.0 MB'."""
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"

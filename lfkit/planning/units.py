"""Byte units, one spelling everywhere in the planner: GB is 10^9 bytes, GiB is 2^30 bytes.

Vendors sell "80 GB" cards, ``nvidia-smi`` prints MiB, PyTorch reports bytes. The planner computes
in bytes and converts only for display, always saying which unit a figure is in: JSON keys end in
``_gib`` or ``_gb`` (never a bare ``_gb`` holding GiB), and text output writes "GiB" or "GB".
Bandwidths are GB/s (10^9 bytes per second), and network links Gbit/s (10^9 bits per second), as
their datasheets give them.
"""

from __future__ import annotations

GB = 10**9
GIB = 2**30


def gib(n_bytes: float) -> float:
    """Bytes in GiB (2^30)."""
    return n_bytes / GIB


def gb(n_bytes: float) -> float:
    """Bytes in GB (10^9)."""
    return n_bytes / GB

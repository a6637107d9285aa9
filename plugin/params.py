"""Parameter sizes that stay right under DeepSpeed ZeRO-3.

ZeRO-3 partitions every parameter across the ranks and leaves each module holding an empty
placeholder tensor (``numel() == 0``); the real size is kept in the ``ds_numel`` attribute
DeepSpeed adds. Everything lfkit writes about parameter counts (the run record, the optimizer
group audit) goes through :func:`param_numel` so both count the same way.
"""

from __future__ import annotations

from typing import Any


def param_numel(p: Any) -> int:
    """Number of elements of parameter ``p``: DeepSpeed's ``ds_numel`` if partitioned, else ``numel()``."""
    n = getattr(p, "ds_numel", None)
    return int(n) if n is not None else p.numel()

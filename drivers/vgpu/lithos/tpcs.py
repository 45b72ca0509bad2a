"""TPC quotas: how LithOS's TPC scheduler divides the TPCs (LithOS §4.1).

Each tenant owns a quota of TPCs, a contiguous range here, in proportion to
its share.  The scheduler that runs on this layout (busy-until timers,
stealing) is part of the policy, `drivers/vgpu/policies/lithos.py`; MIG's
policy splits its slices with the same `largest_remainder`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from drivers.vgpu.errors import InvalidArgument


def largest_remainder(shares: Sequence[float], units: int, minimum: int = 1) -> list[int]:
    """Split `units` in proportion to `shares`, each positive share getting at least `minimum`.

    Shares of zero get nothing; if every share is zero, the units are split
    equally.  The result never adds up to more than `units`.
    """
    if not shares:
        return []
    if not any(shares):
        shares = [1.0] * len(shares)
    total = sum(shares)
    scale = units / max(total, 1.0)  # shares below 1 in all leave units unallocated
    exact = [share * scale for share in shares]
    counts = [
        max(minimum, math.floor(x)) if share > 0 else 0
        for x, share in zip(exact, shares, strict=True)
    ]
    if sum(counts) > units:
        raise InvalidArgument(
            f"{len(shares)} tenants cannot each get at least {minimum} of {units} units"
        )
    budget = min(units, round(sum(exact)))
    # The largest shortfalls first (a share raised to the minimum has none).
    order = sorted(range(len(shares)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in order:
        if sum(counts) >= budget:
            break
        if shares[i] > 0:
            counts[i] += 1
    return counts


class TpcScheduler:
    """The TPC scheduler's quota layout on `n_tpcs` TPCs: tenant i owns the
    TPCs of ``own_mask[i]``, consecutive and after tenant i-1's, and
    ``owner[t]`` is the tenant that owns TPC t (-1: none).  `max_stolen`, the
    bound on a tenant's stolen atoms outstanding, is kept with the layout."""

    def __init__(self, n_tpcs: int, quotas: Sequence[float], max_stolen: int = 2) -> None:
        self.n_tpcs = n_tpcs
        self.max_stolen = max_stolen
        counts = largest_remainder(list(quotas), n_tpcs)
        self.owner = np.full(n_tpcs, -1, dtype=np.int64)
        self.own_mask: list[int] = []
        first = 0
        for i, count in enumerate(counts):
            self.own_mask.append(((1 << count) - 1) << first)
            self.owner[first : first + count] = i
            first += count

"""LithOS's TPC scheduler: quotas, busy-until timers and stealing (LithOS §4.1).

Each tenant owns a quota of TPCs (a contiguous range here).  For every TPC
the scheduler keeps a *busy-until* time: when the work placed on it is
predicted to end.  A TPC may be *stolen* by another tenant when its
busy-until time has passed: its owner left it idle (no request, or a
kernel that needs fewer TPCs).  Stolen atoms run at a lower priority than
the owner's atom that takes its TPCs back, and every atom is short, so an
owner that wants its TPC back waits at most for the one atom running on it;
the borrower's next atoms leave the TPC alone because the owner's own atom
set its busy-until time (`policies/lithos.py` says which of the owner's
atoms outrank stolen blocks).
A tenant may have at most `max_stolen` stolen atoms outstanding.
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


_FOREVER = 1 << 62


class TpcScheduler:
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
        self.busy_until = np.zeros(n_tpcs, dtype=np.int64)
        self.stolen_out = [0] * len(counts)
        self._index: dict[int, np.ndarray] = {}
        full = (1 << n_tpcs) - 1
        self._not_owned = [full & ~mask for mask in self.own_mask]
        # The TPCs idle now, kept until the first busy-until time runs out.
        self._idle = full
        self._idle_until = _FOREVER

    def tpcs(self, mask: int) -> np.ndarray:
        """The TPC indices of `mask` (cached: masks recur)."""
        index = self._index.get(mask)
        if index is None:
            index = np.array([t for t in range(self.n_tpcs) if mask >> t & 1], dtype=np.int64)
            self._index[mask] = index
        return index

    def claim(self, mask: int, until_ns: int) -> None:
        """Work on `mask` is predicted to run until `until_ns`."""
        index = self.tpcs(mask)
        self.busy_until[index] = np.maximum(self.busy_until[index], until_ns)
        self._idle &= ~mask
        self._idle_until = min(self._idle_until, until_ns)

    def stealable(self, tenant: int, now_ns: int) -> int:
        """The TPCs `tenant` may steal now: others' TPCs predicted idle."""
        if self.stolen_out[tenant] >= self.max_stolen:
            return 0
        if now_ns >= self._idle_until:
            idle = self.busy_until <= now_ns
            self._idle = int.from_bytes(np.packbits(idle, bitorder="little").tobytes(), "little")
            later = self.busy_until[~idle]
            self._idle_until = int(later.min()) if later.size else _FOREVER
        return self._idle & self._not_owned[tenant]

    def first_tpcs(self, mask: int, count: int) -> int:
        """The `count` lowest TPCs of `mask`, taken a run of consecutive TPCs at a time."""
        out = 0
        while mask and count > 0:
            low = mask & -mask
            run = mask & ~(mask + low)  # the carry clears exactly the lowest run
            n = run.bit_count()
            if n >= count:
                return out | ((1 << count) - 1) * low
            out |= run
            mask ^= run
            count -= n
        return out

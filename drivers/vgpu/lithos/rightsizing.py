"""LithOS's right-sizing: the fewest TPCs a kernel needs (LithOS §5.5).

Many kernels gain little from the last TPCs they are given.  LithOS models a
kernel's latency on ``t`` TPCs as ``l(t) = m/t + b`` (a parallel part and a
fixed part), fits `m` and `b` online from the kernel's own runs, and gives
it the smallest ``t`` with ``l(t) <= slip * l(all)``; slip 1.1 trades at most
10% of the kernel's latency for the TPCs it frees.

Two refinements keep the choice honest on a device that runs blocks in
waves:

* keep only TPCs the grid can occupy: a grid of ``G`` blocks, ``b`` per TPC,
  needs ``w`` waves on ``t`` TPCs, and the fewest TPCs with the same ``w``
  is ``ceil(G / (w * b))``, so candidates are those *knees*;
* explore gradually: the first run uses all TPCs (trimmed to the knee), the
  second probes the next knee, and no choice goes below half the fewest
  TPCs observed, so a fit from few points cannot send a kernel far from
  what it has seen.

Observations are kept as running sums per kernel key, so fitting is O(1).
"""

from __future__ import annotations

import math
from collections.abc import Hashable


class _Fit:
    __slots__ = ("n", "sx", "sxx", "sy", "sxy", "t_seen", "t_min")

    def __init__(self) -> None:
        self.n = 0
        self.sx = self.sxx = self.sy = self.sxy = 0.0
        self.t_seen: set[int] = set()
        self.t_min = 1 << 30

    def add(self, t: int, latency_ns: float) -> None:
        x = 1.0 / t
        self.n += 1
        self.sx += x
        self.sxx += x * x
        self.sy += latency_ns
        self.sxy += x * latency_ns
        self.t_seen.add(t)
        self.t_min = min(self.t_min, t)

    def line(self) -> tuple[float, float]:
        """Least squares ``(m, b)`` of latency against 1/t."""
        det = self.n * self.sxx - self.sx * self.sx
        if det <= 0:
            return 0.0, self.sy / max(1, self.n)
        m = (self.n * self.sxy - self.sx * self.sy) / det
        return m, (self.sy - m * self.sx) / self.n


def knee(grid: int, blocks_per_tpc: int, waves: int) -> int:
    """The fewest TPCs that run `grid` blocks in `waves` waves."""
    return max(1, math.ceil(grid / (waves * blocks_per_tpc)))


def smallest_knee_at_least(grid: int, blocks_per_tpc: int, x: int) -> int:
    """The fewest TPCs, among the knees, that is still at least `x`."""
    if x <= 1:
        return 1
    # ceil(G / (w b)) >= x  <=>  w < G / (b (x - 1))
    w = max(1, math.ceil(grid / (blocks_per_tpc * (x - 1))) - 1)
    t = knee(grid, blocks_per_tpc, w)
    while t < x and w > 1:
        w -= 1
        t = knee(grid, blocks_per_tpc, w)
    return t


class RightSizer:
    def __init__(self, slip: float = 1.1, max_shrink: float = 0.5, fit: bool = True) -> None:
        """`fit=False` only drops the TPCs the grid cannot occupy (no model, no probe)."""
        if slip < 1.0:
            raise ValueError(f"right-sizing slip must be at least 1, got {slip}")
        self.slip = slip
        self.fit = fit
        self.max_shrink = max_shrink
        self._fits: dict[Hashable, _Fit] = {}
        self.decisions = 0
        self.tpcs_given = 0
        self.tpcs_available = 0

    def choose(self, key: Hashable, grid: int, blocks_per_tpc: int, t_all: int) -> int:
        """TPCs (1..t_all) for the next run of kernel `key`."""
        w_all = math.ceil(grid / (t_all * blocks_per_tpc))
        t_first = knee(grid, blocks_per_tpc, w_all)  # the grid occupies no more
        t = self._choose(key, grid, blocks_per_tpc, w_all, t_first)
        self.decisions += 1
        self.tpcs_given += t
        self.tpcs_available += t_all
        return t

    def _choose(self, key, grid: int, bpt: int, w_all: int, t_first: int) -> int:
        fit = self._fits.get(key)
        if fit is None or not self.fit:
            return t_first
        if len(fit.t_seen) < 2:
            probe = knee(grid, bpt, w_all + 1)
            return probe if probe < t_first and probe not in fit.t_seen else t_first
        m, b = fit.line()
        lower = max(1, math.ceil(fit.t_min * self.max_shrink))
        if m <= 0:  # no gain from TPCs in the observed range
            x = lower
        else:
            headroom = self.slip * (m / t_first + b) - b
            x = max(lower, math.ceil(m / headroom)) if headroom > 0 else t_first
        return min(t_first, smallest_knee_at_least(grid, bpt, x))

    def observe(self, key: Hashable, tpcs: int, latency_ns: int) -> None:
        """Kernel `key` ran on `tpcs` TPCs in `latency_ns`."""
        fit = self._fits.get(key)
        if fit is None:
            fit = self._fits[key] = _Fit()
        fit.add(tpcs, latency_ns)

    def model(self, key: Hashable) -> tuple[float, float] | None:
        """The fitted ``(m, b)`` of `key`, once it has runs on two TPC counts."""
        fit = self._fits.get(key)
        if fit is None or len(fit.t_seen) < 2:
            return None
        return fit.line()

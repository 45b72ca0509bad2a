"""leap: a Leap-style majority-trend prefetcher (Al Maruf & Chowdhury, ATC '20).

Leap §4.1: a task's recent page accesses give a window of deltas; the trend
is the delta that holds a strict majority (Boyer-Moore vote) in the most
recent 4, 8, 16, ... deltas, the smallest window that has one.  With a trend
`d`, a fault on `vpn` prefetches ``vpn + d, vpn + 2d, ...``.  Leap §4.2: the
prefetch window adapts to how useful the last prefetches were — it doubles
while most were used, halves when none were — and without a trend nothing is
prefetched.  A prefetched page that was used counts as an access in the
history, so a sequential scan keeps its delta of 1 while its faults thin out.

Eviction is left to the kernel's default (CLOCK); prefetched pages start
unreferenced, so unused ones go first.
"""

from collections import deque

from kernel.mlaas import MemoryAdvisor


def majority_trend(history, smallest=4):
    """The delta with a strict majority in the most recent window that has one."""
    deltas = [b - a for a, b in zip(history, list(history)[1:], strict=False)]
    window = smallest
    while True:
        recent = deltas[-window:]
        candidate, votes = None, 0
        for d in recent:  # Boyer-Moore majority vote
            if votes == 0:
                candidate, votes = d, 1
            else:
                votes += 1 if d == candidate else -1
        if candidate is not None and candidate != 0 and 2 * recent.count(candidate) > len(recent):
            return candidate
        if window >= len(deltas):
            return None
        window *= 2


class Leap(MemoryAdvisor):
    name = "leap"
    budget_us = 1_000
    params = {"history": 32, "max_window": 16}

    def on_load(self) -> None:
        self.history: dict[int, deque] = {}
        self.window: dict[int, int] = {}
        self.outstanding: dict[int, list[int]] = {}  # pid -> pages prefetched at its last fault
        self.max_window = max(1, self.ctx.params["max_window"])

    def _used(self, pid, pages):
        mem = self.ctx.memory
        used = []
        for vpn in pages:
            frame = mem.frame_of(pid, vpn)
            if frame is not None and mem.referenced(frame):
                used.append(vpn)
        return used

    def on_fault(self, pid, vpn, major):
        hist = self.history.get(pid)
        if hist is None:
            hist = self.history[pid] = deque(maxlen=self.ctx.params["history"] + 1)
            self.window[pid] = 1
        last = self.outstanding.pop(pid, None)
        if last:
            used = self._used(pid, last)
            hist.extend(used)  # hits on prefetched pages are accesses too
            w = self.window[pid]
            if not used:
                w //= 2
            elif 2 * len(used) >= len(last):
                w = min(2 * w, self.max_window)
            self.window[pid] = w
        hist.append(vpn)

    def prefetch(self, pid, vpn):
        hist = self.history.get(pid)
        if hist is None or len(hist) < 3:
            return None
        trend = majority_trend(hist)
        if trend is None:
            return None
        window = self.window[pid] = max(1, self.window[pid])
        pages = [vpn + k * trend for k in range(1, window + 1)]
        self.outstanding[pid] = pages
        return pages

    def on_launch(self, pid, program):
        for table in (self.history, self.window, self.outstanding):
            table.pop(pid, None)

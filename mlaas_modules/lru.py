"""lru: least-recently-used page replacement.

Every access notice moves the page's frame to the young end of an ordered
map; the victim is the oldest frame among the candidates.  Exact LRU costs
one callback per memory access, which is why kernels approximate it with
CLOCK; here it is the baseline the memory experiment measures gaps from.
"""

from bisect import bisect_left
from collections import OrderedDict

from kernel.mlaas import MemoryAdvisor


class Lru(MemoryAdvisor):
    name = "lru"
    budget_us = 2_000

    def on_load(self) -> None:
        self.order: OrderedDict[int, None] = OrderedDict()

    def on_access(self, frame, pid, vpn):
        order = self.order
        if frame in order:
            order.move_to_end(frame)
        else:
            order[frame] = None

    def on_evict(self, frame, pid, vpn):
        self.order.pop(frame, None)

    def select_victim(self, candidates):
        for frame in self.order:  # oldest first
            i = bisect_left(candidates, frame)
            if i < len(candidates) and candidates[i] == frame:
                return frame
        return None  # no access seen yet for any candidate: the default decides

    def export_state(self):
        return list(self.order)

    def import_state(self, state):
        self.order = OrderedDict.fromkeys(state)

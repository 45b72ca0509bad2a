"""clock: CLOCK (second-chance) page replacement, as a loadable module.

The kernel's built-in policy is also CLOCK; this module is the baseline the
memory experiment loads beside `lru`, and the smallest example of a memory
advisor.  A module cannot clear the kernel's reference bits (its view is
read-only), so it keeps its own, set by access notices.
"""

from bisect import bisect_left

from kernel.mlaas import MemoryAdvisor


class Clock(MemoryAdvisor):
    name = "clock"
    budget_us = 2_000  # one sweep may visit every frame

    def on_load(self) -> None:
        self.referenced = bytearray(self.ctx.memory.nframes)
        self.hand = 0

    def on_access(self, frame, pid, vpn):
        self.referenced[frame] = 1

    def select_victim(self, candidates):
        owner = self.ctx.memory.owner
        n = len(self.referenced)
        for _ in range(2 * n + 1):  # two sweeps always find an unreferenced frame
            frame = self.hand
            self.hand = (frame + 1) % n
            i = bisect_left(candidates, frame)
            if i == len(candidates) or candidates[i] != frame or owner(frame) is None:
                continue
            if self.referenced[frame]:
                self.referenced[frame] = 0
                continue
            return frame
        return None

    def export_state(self):
        return {"referenced": bytes(self.referenced), "hand": self.hand}

    def import_state(self, state):
        self.referenced = bytearray(state["referenced"])
        self.hand = state["hand"]

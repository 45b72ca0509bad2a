"""Lab memory, reference solution: least frequently used, ties to the least recent.

Each access counts one use of its page (named by ``(pid, vpn)``, since a
frame changes hands).  The victim is the resident page used least often,
and of those the one used longest ago.  A scan touches each of its pages
once, so it cannot push out a hot page that has been used again and again,
which is LRU's weakness; OPT, knowing the future, still does better.
"""

from kernel.mlaas import MemoryAdvisor

NEVER = (0, 0)


class MyPager(MemoryAdvisor):
    name = "my_pager"

    def on_load(self):
        self.uses = {}  # (pid, vpn) -> (times used, when last used)
        self.clock = 0

    def on_access(self, frame, pid, vpn):
        self.clock += 1
        count, _ = self.uses.get((pid, vpn), NEVER)
        self.uses[(pid, vpn)] = (count + 1, self.clock)

    def select_victim(self, candidates):
        owner = self.ctx.memory.owner
        return min(candidates, key=lambda frame: self.uses.get(owner(frame), NEVER))

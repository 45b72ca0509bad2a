"""noop: a sched advisor that is asked every decision and always defers.

`select_next` answers None ("no opinion"), so the kernel's round robin
decides, but every dispatch still calls into the module through its guard.
`malv bench mlaas` measures that cost; it is also the smallest template of
a sched advisor.
"""

from kernel.mlaas import SchedAdvisor


class Noop(SchedAdvisor):
    name = "noop"
    budget_us = 100

    def select_next(self, candidates, cpu):
        return None

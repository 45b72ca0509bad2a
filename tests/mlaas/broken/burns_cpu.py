"""A sched advisor whose select_next burns ten times its 2 ms budget of its own
thread's CPU time (measured with time.thread_time, so the host's load does not
change how much it burns)."""

import time

from kernel.mlaas import SchedAdvisor


class BurnsCpu(SchedAdvisor):
    name = "burns_cpu"
    budget_us = 2_000

    def select_next(self, candidates, cpu):
        start = time.thread_time()
        while time.thread_time() - start < 0.020:
            pass
        return None

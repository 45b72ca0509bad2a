"""A sched advisor that returns, but always uses about 2 ms of CPU of a 100 us budget."""

import time

from kernel.mlaas import SchedAdvisor


class Overruns(SchedAdvisor):
    name = "overruns"
    budget_us = 100

    def select_next(self, candidates, cpu):
        end = time.thread_time() + 0.002  # CPU time, as the budget is
        while time.thread_time() < end:
            pass
        return None

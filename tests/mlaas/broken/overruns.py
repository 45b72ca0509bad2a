"""A sched advisor that returns, but always takes about 2 ms of a 100 us budget."""

import time

from kernel.mlaas import SchedAdvisor


class Overruns(SchedAdvisor):
    name = "overruns"
    budget_us = 100

    def select_next(self, candidates, cpu):
        end = time.perf_counter() + 0.002
        while time.perf_counter() < end:
            pass
        return None

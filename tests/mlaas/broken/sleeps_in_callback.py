"""A sched advisor whose select_next blocks in time.sleep, in C, for longer than
any test waits."""

import time

from adversary import HANG_S

from kernel.mlaas import SchedAdvisor


class SleepsInCallback(SchedAdvisor):
    name = "sleeps_in_callback"

    def select_next(self, candidates, cpu):
        time.sleep(HANG_S)
        return None

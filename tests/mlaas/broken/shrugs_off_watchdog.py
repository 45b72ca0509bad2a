"""A sched advisor whose select_next loops and swallows whatever is raised into it
(`except BaseException: pass`), the watchdog's interruption included, and loops on."""

import time

from adversary import HANG_S

from kernel.mlaas import SchedAdvisor


class ShrugsOffWatchdog(SchedAdvisor):
    name = "shrugs_off_watchdog"
    budget_us = 500

    def select_next(self, candidates, cpu):
        deadline = time.monotonic() + HANG_S
        while time.monotonic() < deadline:
            try:
                while time.monotonic() < deadline:
                    pass
            except BaseException:
                pass
        return None

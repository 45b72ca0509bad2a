"""A sched advisor whose select_next never returns: the watchdog interrupts it."""

from kernel.mlaas import SchedAdvisor


class LoopsForever(SchedAdvisor):
    name = "loops_forever"
    budget_us = 500

    def select_next(self, candidates, cpu):
        n = 0
        while True:
            n += 1

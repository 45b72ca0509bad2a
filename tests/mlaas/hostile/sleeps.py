"""Hostile: sleeps for an hour inside a C call (time.sleep), where no Python-level
interrupt reaches: asleep, it misses its deadlines."""

import time

from kernel.mlaas import MemoryAdvisor


class Sleeps(MemoryAdvisor):
    name = "sleeps"

    def select_victim(self, candidates):
        time.sleep(3600)

"""Hostile: stops its own process (SIGSTOP) in a callback.  Stopped is not
asleep: the kernel cannot tell it from a host that stopped the process, so
only the hang limit ends the question."""

import os
import signal

from kernel.mlaas import MemoryAdvisor


class Stops(MemoryAdvisor):
    name = "stops"

    def select_victim(self, candidates):
        os.kill(os.getpid(), signal.SIGSTOP)
        return candidates[0]

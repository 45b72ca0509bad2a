"""Hostile: ignores every signal it can and swallows every exception, forever."""

import signal
import time

from kernel.mlaas import MemoryAdvisor


class Unkillable(MemoryAdvisor):
    name = "unkillable"

    def select_victim(self, candidates):
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU, signal.SIGALRM):
            signal.signal(sig, signal.SIG_IGN)
        while True:
            try:
                time.sleep(0.05)
            except BaseException:
                pass

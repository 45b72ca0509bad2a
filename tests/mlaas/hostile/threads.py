"""Hostile: tries to leave threads running (not daemons: they would keep a process
alive).  The sandbox denies every new thread, so `on_load` raises."""

import threading
import time

from kernel.mlaas import MemoryAdvisor


def _linger():
    while True:
        time.sleep(0.05)


class Threads(MemoryAdvisor):
    name = "threads"

    def on_load(self):
        for i in range(3):
            threading.Thread(target=_linger, name=f"leaked-{i}").start()

    def select_victim(self, candidates):
        return threading.active_count()

"""A memory advisor that leaves cyclic garbage whose __del__ never returns: it
runs wherever the garbage collector finds it, outside any callback."""

import time

from kernel.mlaas import MemoryAdvisor


class Knot:
    def __init__(self):
        self.me = self  # a cycle: only the collector frees it

    def __del__(self):
        while True:
            time.sleep(0.01)


class HangsInCollection(MemoryAdvisor):
    name = "hangs_in_collection"

    def on_fault(self, pid, vpn, major):
        if vpn % 8 == 0:
            Knot()

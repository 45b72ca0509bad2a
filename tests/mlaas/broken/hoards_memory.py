"""A sched advisor whose first select_next allocates and fills memory, 8 MiB at a
time up to 768 MiB, and keeps it all.  `hoards` holds a weak reference to the
hoard, so a test can tell when it is freed.  Its budget is the largest there
is: filling memory is not meant to be an overrun."""

import weakref

from kernel.mlaas import SchedAdvisor

CHUNK_BYTES = 8 << 20
HOARD_BYTES = 768 << 20


class Hoard:
    def __init__(self):
        self.chunks = []

    def fill(self):
        while len(self.chunks) * CHUNK_BYTES < HOARD_BYTES:
            self.chunks.append(bytearray(b"\x01") * CHUNK_BYTES)


class HoardsMemory(SchedAdvisor):
    name = "hoards_memory"
    budget_us = 100_000

    def on_load(self):
        self.hoards = []  # weak references to what it allocated

    def select_next(self, candidates, cpu):
        if not self.hoards:
            self.hoard = Hoard()
            self.hoards.append(weakref.ref(self.hoard))
            self.hoard.fill()
        return None

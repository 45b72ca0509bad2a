"""Hostile: allocates 2 GiB in a callback."""

from kernel.mlaas import MemoryAdvisor


class MemoryBomb(MemoryAdvisor):
    name = "memory_bomb"

    def select_victim(self, candidates):
        self.hoard = bytearray(2 << 30)
        return candidates[0]

"""A memory advisor whose select_victim raises on its first eviction."""

from kernel.mlaas import MemoryAdvisor


class Raises(MemoryAdvisor):
    name = "raises"

    def select_victim(self, candidates):
        return candidates[0] // 0

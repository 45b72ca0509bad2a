"""Hostile: spins on the CPU in a callback, forever."""

from kernel.mlaas import MemoryAdvisor


class CpuHog(MemoryAdvisor):
    name = "cpu_hog"

    def select_victim(self, candidates):
        n = 0
        while True:
            n += 1

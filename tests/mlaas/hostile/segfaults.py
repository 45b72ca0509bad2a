"""Hostile: dereferences a null pointer in a callback (SIGSEGV)."""

import ctypes

from kernel.mlaas import MemoryAdvisor


class Segfaults(MemoryAdvisor):
    name = "segfaults"

    def select_victim(self, candidates):
        return ctypes.string_at(0)

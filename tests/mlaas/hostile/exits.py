"""Hostile: ends its own process from a callback, skipping every handler."""

import os

from kernel.mlaas import MemoryAdvisor


class Exits(MemoryAdvisor):
    name = "exits"

    def select_victim(self, candidates):
        os._exit(3)

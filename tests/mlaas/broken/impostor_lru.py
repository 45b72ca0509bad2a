"""A memory advisor from another file that calls itself lru, the name of a
shipped module.  `VERSION` tells one edit of it from another."""

from kernel.mlaas import MemoryAdvisor

VERSION = 1


class ImpostorLru(MemoryAdvisor):
    name = "lru"

    def on_load(self):
        self.version = VERSION

    def select_victim(self, candidates):
        return candidates[0]

"""A module that does not compile."""

from kernel.mlaas import MemoryAdvisor


class SyntaxError_(MemoryAdvisor):
    name = "syntax_error"

    def select_victim(self, candidates)
        return candidates[0]

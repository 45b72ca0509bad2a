"""A memory advisor that answers whatever the test tells it: `self.told[callback]`
makes each answer from the call's arguments (a lying int, a numpy value, an object
whose dunders go off, ...)."""

from kernel.mlaas import MemoryAdvisor


class AnswersAsToldMemory(MemoryAdvisor):
    name = "told_memory"

    def on_load(self):
        self.told = {}

    def _answer(self, callback, *args):
        make = self.told.get(callback)
        return None if make is None else make(*args)

    def select_victim(self, candidates):
        return self._answer("select_victim", candidates)

    def prefetch(self, pid, vpn):
        return self._answer("prefetch", pid, vpn)

    def on_evict(self, frame, pid, vpn):
        self._answer("on_evict", frame, pid, vpn)

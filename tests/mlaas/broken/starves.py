"""A sched advisor that always runs the lowest pid: the others starve behind it."""

from kernel.mlaas import SchedAdvisor


class Starves(SchedAdvisor):
    name = "starves"

    def select_next(self, candidates, cpu):
        return min(candidates, key=lambda t: t.pid)

"""A sched advisor whose time slice is an int that lies: it claims to be within
any bound and converts to 7, but its real value is `real` (default -1)."""

from adversary import LyingInt

from kernel.mlaas import SchedAdvisor


class LyingSlice(SchedAdvisor):
    name = "lying_slice"
    params = {"real": -1}

    def time_slice(self, task):
        return LyingInt(self.ctx.params["real"])

"""A power advisor whose clock is an int that lies: it claims to equal every clock
and converts to 7, but its real value is `real` (default -1)."""

from adversary import LyingInt

from kernel.mlaas import PowerAdvisor


class LyingClock(PowerAdvisor):
    name = "lying_clock"
    params = {"real": -1}

    def frequency(self, device):
        return LyingInt(self.ctx.params["real"])

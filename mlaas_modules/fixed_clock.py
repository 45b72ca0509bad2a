"""fixed_clock: a baseline power advisor that pins the GPU clock.

`clock_mhz` = 0 (the default) means the device's highest clock; any other
value must be one of the device's clocks, or the module is ejected for an
invalid answer on its first call.
"""

from kernel.mlaas import PowerAdvisor


class FixedClock(PowerAdvisor):
    name = "fixed_clock"
    budget_us = 200
    params = {"clock_mhz": 0}

    def frequency(self, device):
        wanted = self.ctx.params["clock_mhz"]
        return wanted if wanted else max(device.clocks_mhz)

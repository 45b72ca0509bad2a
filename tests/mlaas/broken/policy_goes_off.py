"""A GPU advisor whose `sharing_policy` is a property that goes off when read:
it raises, exits or hangs as `how` says."""

from adversary import go_off

from kernel.mlaas import GpuAdvisor


class PolicyGoesOff(GpuAdvisor):
    name = "policy_goes_off"
    params = {"how": "raise"}

    @property
    def sharing_policy(self):
        return go_off(self.ctx.params["how"], "sharing_policy")

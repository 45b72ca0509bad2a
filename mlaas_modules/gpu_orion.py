"""gpu_orion: Orion: best-effort admission by SMs, compute/memory profile and outstanding duration
(duration_cap_us 0: 2.5% of the high-priority request time).

Selects the vGPU's `orion` sharing policy (drivers/vgpu/policies) while the
kernel runs; its parameters are the policy's parameter set.
"""

from kernel.mlaas import GpuAdvisor


class GpuOrion(GpuAdvisor):
    name = "gpu_orion"
    sharing_policy = "orion"
    budget_us = 200
    params = {"duration_cap_us": 0, "decision_us": 0}

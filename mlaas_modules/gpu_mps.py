"""gpu_mps: MPS: one shared space, first launched first served.

Selects the vGPU's `mps` sharing policy (drivers/vgpu/policies) while the
kernel runs; its parameters are the policy's parameter set.
"""

from kernel.mlaas import GpuAdvisor


class GpuMps(GpuAdvisor):
    name = "gpu_mps"
    sharing_policy = "mps"
    budget_us = 200

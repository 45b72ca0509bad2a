"""gpu_priority: Stream priorities: high-priority blocks first among pending ones, no eviction.

Selects the vGPU's `priority` sharing policy (drivers/vgpu/policies) while the
kernel runs; its parameters are the policy's parameter set.
"""

from kernel.mlaas import GpuAdvisor


class GpuPriority(GpuAdvisor):
    name = "gpu_priority"
    sharing_policy = "priority"
    budget_us = 200

"""gpu_reef: REEF: best-effort kernels padded beside high-priority ones, batch-released when idle.

Selects the vGPU's `reef` sharing policy (drivers/vgpu/policies) while the
kernel runs; its parameters are the policy's parameter set.
"""

from kernel.mlaas import GpuAdvisor


class GpuReef(GpuAdvisor):
    name = "gpu_reef"
    sharing_policy = "reef"
    budget_us = 200
    params = {"batch_depth": 12, "preempt_us": 0}

"""gpu_tgs: TGS: best-effort launch rate under slow start and AIMD on the high-priority rate.

Selects the vGPU's `tgs` sharing policy (drivers/vgpu/policies) while the
kernel runs; its parameters are the policy's parameter set.
"""

from kernel.mlaas import GpuAdvisor


class GpuTgs(GpuAdvisor):
    name = "gpu_tgs"
    sharing_policy = "tgs"
    budget_us = 200
    params = {"period_us": 5000000, "threshold": 0.03, "poll_us": 10000}

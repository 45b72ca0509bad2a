"""gpu_mig: MIG: static GPC-aligned partitions (slices per tenant, comma-separated; empty: by
quota).

Selects the vGPU's `mig` sharing policy (drivers/vgpu/policies) while the
kernel runs; its parameters are the policy's parameter set.
"""

from kernel.mlaas import GpuAdvisor


class GpuMig(GpuAdvisor):
    name = "gpu_mig"
    sharing_policy = "mig"
    budget_us = 200
    params = {"slices": "", "reconfigure_us": 1000000}

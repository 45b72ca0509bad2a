"""gpu_mps_limit: MPS with active-thread limits: per-context TPC caps (percentages, comma-separated;
empty: the tenants' quotas).

Selects the vGPU's `mps-limit` sharing policy (drivers/vgpu/policies) while the
kernel runs; its parameters are the policy's parameter set.
"""

from kernel.mlaas import GpuAdvisor


class GpuMpsLimit(GpuAdvisor):
    name = "gpu_mps_limit"
    sharing_policy = "mps-limit"
    budget_us = 200
    params = {"percentages": ""}

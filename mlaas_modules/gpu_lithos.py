"""gpu_lithos: LithOS: TPC quotas, stealing, 250-500 us atoms, and optionally right-sizing (slip
1.1) and DVFS.

Selects the vGPU's `lithos` sharing policy (drivers/vgpu/policies) while the
kernel runs; its parameters are the policy's parameter set.
"""

from kernel.mlaas import GpuAdvisor


class GpuLithos(GpuAdvisor):
    name = "gpu_lithos"
    sharing_policy = "lithos"
    budget_us = 200
    params = {
        "atom_max_us": 500,
        "max_stolen": 2,
        "stealing": True,
        "rightsizing": False,
        "rightsizing_fit": True,
        "dvfs": False,
        "slip": 1.1,
        "estimate": "isolated",
        "lend_best_effort": True,
    }

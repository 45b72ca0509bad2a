"""gpu_timeslice: Time slicing: contexts take turns on the whole GPU.

Selects the vGPU's `timeslice` sharing policy (drivers/vgpu/policies) while the
kernel runs; its parameters are the policy's parameter set.
"""

from kernel.mlaas import GpuAdvisor


class GpuTimeslice(GpuAdvisor):
    name = "gpu_timeslice"
    sharing_policy = "timeslice"
    budget_us = 200
    params = {"slice_us": 500}

"""The booted driver's default policy (`drivers/vgpu/policies`).

With no sharing policy selected, the vGPU driver (`drivers/vgpu/scheduler.py`)
runs each kernel whole, first launched first served as under MPS, on the
mask its launch asked for (its `LaunchSpec.mask`, else the GPU advisor's
TPC allocation for its context, else the whole device) and at the priority
it asked for.  The driver puts both in the kernel's column of the loop's
kernel table when the program launches it (`K_MASK`, `K_PRIO`).  It is not
one of the policies a user selects by name.
"""

from __future__ import annotations

from drivers.vgpu.sharing.compiled import (
    K_MASK,
    K_PRIO,
    Pol,
    compiled_fn,
    empty_pol,
    host_order,
    kernel_index,
    launch_whole,
)
from drivers.vgpu.sharing.policy import SharingPolicy


class Advised(SharingPolicy):
    """Whole kernels on the masks and at the priorities their launches asked for."""

    name = "default"

    def compiled_setup(self, sim) -> Pol:
        self.sim = sim
        return empty_pol(0)


@compiled_fn
def compiled_kernel_ready(d, p, s):
    k = kernel_index(d, s)
    launch_whole(d, s, d.kern[K_MASK, k], d.kern[K_PRIO, k], host_order(d, s))

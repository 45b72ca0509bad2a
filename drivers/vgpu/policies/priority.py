"""Stream priorities (`drivers/vgpu/policies`).

High-priority kernels go first among *pending* blocks: a free TPC takes a
block of the highest-priority atom that has blocks left.  Blocks already
resident are never evicted, so a high-priority kernel still waits for the
best-effort blocks that hold the TPCs it needs (CUDA stream priorities).
"""

from __future__ import annotations

from drivers.vgpu.policies.base import PRIO_HIGH, PRIO_LOW, SharingPolicy


class Priority(SharingPolicy):
    name = "priority"
    summary = "Stream priorities: high-priority blocks first among pending ones, no eviction."
    compiled_setup = SharingPolicy.static_compiled_setup
    compiled_module = "drivers.vgpu.policies.mps"

    def priority(self, s) -> int:
        return PRIO_HIGH if s.hp else PRIO_LOW

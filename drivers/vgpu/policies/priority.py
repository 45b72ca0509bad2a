"""Stream priorities (`drivers/vgpu/policies`).

High-priority kernels go first among *pending* blocks: a free TPC takes a
block of the highest-priority atom that has blocks left.  Blocks already
resident are never evicted, so a high-priority kernel still waits for the
best-effort blocks that hold the TPCs it needs (CUDA stream priorities).
Each kernel launches whole on the whole device, at its stream's priority:
mps.py's callback on mps.py's state.
"""

from __future__ import annotations

from drivers.vgpu.sharing.compiled import STATIC_STATE, Pol, new_state
from drivers.vgpu.sharing.policy import PRIO_HIGH, PRIO_LOW, SharingPolicy


class Priority(SharingPolicy):
    name = "priority"
    summary = "Stream priorities: high-priority blocks first among pending ones, no eviction."
    compiled_module = "drivers.vgpu.policies.mps"

    def compiled_setup(self, sim) -> Pol:
        self.sim = sim
        return new_state(
            STATIC_STATE,
            0,
            masks=[sim.full_mask] * len(sim.streams),
            priorities=[PRIO_HIGH if s.hp else PRIO_LOW for s in sim.streams],
        )

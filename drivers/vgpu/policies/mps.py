"""MPS and MPS with thread limits (`drivers/vgpu/policies`).

`mps`: every context launches freely into one shared space, and the device
serves blocks first launched, first served (the engine's ``launch`` dispatch
order).  Nothing isolates a tenant: whoever launches more wins, and a wide
best-effort kernel launched just before a latency-critical one delays it by
the whole of its grid.

`mps-limit`: CUDA_MPS_ACTIVE_THREAD_PERCENTAGE caps the SMs one client may
fill.  The engine places blocks by TPC mask, so a cap of p% is a range of
p% of the TPCs.  The ranges of the tenants (their `quota` shares, or equal
shares when none is set) are laid end to end; when the percentages add up
to more than 100% they wrap around and overlap, as MPS clients do.

Both launch each kernel whole as it is ready, on its stream's fixed mask at
its fixed priority (`STATIC_STATE`): the callback below, which `priority`
(priority.py) runs too.
"""

from __future__ import annotations

import math

from drivers.vgpu.sharing.compiled import (
    STATIC_STATE,
    Pol,
    new_state,
    state_values,
    static_kernel_ready,
)
from drivers.vgpu.sharing.policy import PRIO_NORMAL, SharingPolicy, number_list, range_mask


class Mps(SharingPolicy):
    name = "mps"
    summary = "MPS: one shared space, first launched first served."

    def compiled_setup(self, sim) -> Pol:
        self.sim = sim
        n = len(sim.streams)
        return new_state(STATE, 0, masks=[sim.full_mask] * n, priorities=[PRIO_NORMAL] * n)


class MpsLimit(SharingPolicy):
    name = "mps-limit"
    summary = (
        "MPS with active-thread limits: per-context TPC caps (percentages, comma-separated; "
        "empty: the tenants' quotas)."
    )
    PARAMETERS = {"percentages": number_list("percentages", float)}

    def __init__(self, percentages: tuple[float, ...] | None = None) -> None:
        self.percentages = percentages

    def _masks(self, sim) -> list[int]:
        """Each stream's range of TPCs, from the percentages or the quotas."""
        n = sim.n_tpcs
        shares = self.percentages
        if shares is None:
            quotas = [s.quota for s in sim.streams]
            if quotas and not any(quotas):
                quotas = [1.0 / len(quotas)] * len(quotas)
            shares = tuple(100.0 * q for q in quotas)
        if len(shares) != len(sim.streams):
            raise ValueError(f"mps-limit: {len(shares)} percentages for {len(sim.streams)} tenants")
        masks = []
        first = 0
        for pct in shares:
            count = min(n, max(1, math.floor(pct * n / 100.0 + 0.5)))
            masks.append(range_mask(first, count, n))
            first = (first + count) % n
        return masks

    def compiled_setup(self, sim) -> Pol:
        self.sim = sim
        masks = self._masks(sim)
        return new_state(STATE, 0, masks=masks, priorities=[PRIO_NORMAL] * len(masks))

    def compiled_report(self, pol: Pol) -> dict:
        masks = state_values(pol, STATE)["masks"][: len(self.sim.streams)]
        return {"tpcs": [int(m).bit_count() for m in masks]}


# The named state: each stream's fixed mask and priority (that of mps,
# mps-limit and priority).
STATE = STATIC_STATE
compiled_kernel_ready = static_kernel_ready

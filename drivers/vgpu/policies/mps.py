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
"""

from __future__ import annotations

import math

from drivers.vgpu.policies.base import SharingPolicy, number_list, range_mask
from drivers.vgpu.policies.compiled import STATIC_STATE, static_kernel_ready


class Mps(SharingPolicy):
    name = "mps"
    summary = "MPS: one shared space, first launched first served."
    compiled_setup = SharingPolicy.static_compiled_setup


class MpsLimit(SharingPolicy):
    name = "mps-limit"
    summary = (
        "MPS with active-thread limits: per-context TPC caps (percentages, comma-separated; "
        "empty: the tenants' quotas)."
    )
    PARAMETERS = {"percentages": number_list("percentages", float)}
    compiled_setup = SharingPolicy.static_compiled_setup

    def __init__(self, percentages: tuple[float, ...] | None = None) -> None:
        self.percentages = percentages

    def setup(self) -> None:
        sim = self.sim
        n = sim.n_tpcs
        shares = self.percentages
        if shares is None:
            quotas = [s.quota for s in sim.streams]
            if quotas and not any(quotas):
                quotas = [1.0 / len(quotas)] * len(quotas)
            shares = tuple(100.0 * q for q in quotas)
        if len(shares) != len(sim.streams):
            raise ValueError(f"mps-limit: {len(shares)} percentages for {len(sim.streams)} tenants")
        self.masks = []
        first = 0
        for pct in shares:
            count = min(n, max(1, math.floor(pct * n / 100.0 + 0.5)))
            self.masks.append(range_mask(first, count, n))
            first = (first + count) % n

    def mask(self, s) -> int:
        return self.masks[s.index]

    def report(self) -> dict:
        return {"tpcs": [m.bit_count() for m in self.masks]}


# The compiled form: whole kernels on each stream's fixed mask, at its fixed
# priority (the state of mps, mps-limit and priority).
STATE = STATIC_STATE
compiled_kernel_ready = static_kernel_ready

"""What remains of LithOS's parts beside its policy (Coppock et al., SOSP 2025).

LithOS's mechanisms live in its sharing policy, `drivers/vgpu/policies/lithos.py`,
written once as compiled functions: the TPC scheduler's busy-until timers and
stealing, the atomizer, the latency predictor, right-sizing and DVFS.

Only the quota layout remains here (`tpcs.py`), shared by that policy and
MIG's: `largest_remainder` splits units in proportion to shares, and
`TpcScheduler` gives each tenant a contiguous range of TPCs by its quota.
"""

from drivers.vgpu.lithos.tpcs import TpcScheduler, largest_remainder

__all__ = ["TpcScheduler", "largest_remainder"]

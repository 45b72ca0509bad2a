"""LithOS's mechanisms on the virtual GPU (Coppock et al., SOSP 2025).

The parts the `lithos` sharing policy (`drivers/vgpu/policies/lithos.py`)
is built from, each usable and testable alone:

* `predictor.LatencyPredictor`: online per-kernel latency prediction;
* `atomizer.Atomizer`: cutting kernels into atoms of 250-500 us;
* `tpcs.TpcScheduler`: TPC quotas, per-TPC busy-until timers, stealing;
* `rightsizing.RightSizer`: l(t) = m/t + b fitted online, slip 1.1;
* `dvfs.DvfsGovernor`: f = f_max / (1 + slip/S), rate-limited.
"""

from drivers.vgpu.lithos.atomizer import Atomizer
from drivers.vgpu.lithos.dvfs import DvfsGovernor
from drivers.vgpu.lithos.predictor import LatencyPredictor
from drivers.vgpu.lithos.rightsizing import RightSizer
from drivers.vgpu.lithos.tpcs import TpcScheduler

__all__ = ["Atomizer", "DvfsGovernor", "LatencyPredictor", "RightSizer", "TpcScheduler"]

"""Honest statistics of the sharing experiments (`exp/sharing`).

Every latency percentile comes with its sample count and a bootstrap
confidence interval; a ratio of two percentiles comes with a paired
bootstrap interval; and a tenant whose queue does not drain is marked
unstable, so that no ratio of its latencies reads as a speed-up.

The bootstrap is seeded (`RESAMPLES` resamples of the pooled latencies), so
a seed gives the same intervals byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from exp.sharing.catalogue import MS

RESAMPLES = 1000
CONFIDENCE = 0.95
#: Resamples drawn at once, to bound the memory of a long run's latencies.
CHUNK = 100

#: A queue that drains holds a few requests at any instant (rho / (1 - rho)
#: on average: 9 at 90% utilization), whatever the run's length; one whose
#: arrival rate exceeds its service rate grows with the window.  A tenant
#: that still holds more than this share of the window's requests at its end
#: (and at least `UNSTABLE_MIN` of them) is unstable.
UNSTABLE_SHARE = 0.1
UNSTABLE_MIN = 5


def _resampled_percentiles(samples: Sequence[np.ndarray], q: float, seed: int) -> list[np.ndarray]:
    """`RESAMPLES` percentiles of each array in `samples`; arrays of one
    length share their resample indices (a paired bootstrap)."""
    rng = np.random.default_rng(seed)
    n = len(samples[0])
    paired = all(len(s) == n for s in samples)
    out: list[list[np.ndarray]] = [[] for _ in samples]
    for start in range(0, RESAMPLES, CHUNK):
        size = min(CHUNK, RESAMPLES - start)
        shared = rng.integers(0, n, (size, n)) if paired else None
        for i, s in enumerate(samples):
            idx = shared if shared is not None else rng.integers(0, len(s), (size, len(s)))
            out[i].append(np.percentile(s[idx], q, axis=1))
    return [np.concatenate(chunks) for chunks in out]


def _interval(values: np.ndarray) -> list[float]:
    tail = 100 * (1 - CONFIDENCE) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return [float(lo), float(hi)]


def percentile_ci_ms(latencies_ns: np.ndarray, q: float, seed: int = 0) -> list[float]:
    """The bootstrap interval of the q-th percentile, in ms ([nan, nan] with no sample)."""
    if not len(latencies_ns):
        return [float("nan"), float("nan")]
    (values,) = _resampled_percentiles([np.asarray(latencies_ns, np.float64)], q, seed)
    return [v / MS for v in _interval(values)]


def ratio_ci(a_ns: np.ndarray, b_ns: np.ndarray, q: float = 99, seed: int = 0) -> list[float]:
    """The bootstrap interval of percentile(a) / percentile(b).

    Runs under two policies with the same seeds see the same open-loop
    arrivals, and a stream serves its requests in order, so the i-th
    latency of each is the same request: equal-length samples are resampled
    together (paired).  Samples of different lengths are resampled apart."""
    if not len(a_ns) or not len(b_ns):
        return [float("nan"), float("nan")]
    a, b = _resampled_percentiles(
        [np.asarray(a_ns, np.float64), np.asarray(b_ns, np.float64)], q, seed
    )
    return _interval(a / b)


def is_unstable(requests: int, unfinished: int) -> bool:
    """Whether a tenant's queue did not drain (see `UNSTABLE_SHARE`)."""
    return unfinished >= max(UNSTABLE_MIN, UNSTABLE_SHARE * requests)

"""Short LoadGen runs against a booted realtime kernel.

They run in wall time: each is a few seconds of LoadGen issuing at a low
rate, with latency bounds generous enough that a busy host still meets
them.  Nothing here asserts on speed.
"""

from __future__ import annotations

import pytest

from exp.loadgen import ServeSettings

pytest.importorskip("mlperf_loadgen", reason="MLPerf LoadGen (mlcommons-loadgen) is not installed")

MODEL = "resnet50_b4_inference"


def short_run(**changes) -> ServeSettings:
    """A Server run of about two seconds at 20 queries/s under MPS (the
    cheapest policy to simulate), bound 10 s at P90: on a busy host the
    kernel lags the wall clock, and LoadGen's latencies include the lag."""
    base = dict(
        scenario="Server", model=MODEL, policy="mps", qps=20.0, latency_bound_ms=10_000.0,
        latency_percentile=90.0, min_duration_s=2.0, min_queries=50, query_timeout_s=20.0,
    )  # fmt: skip
    return ServeSettings(**{**base, **changes})

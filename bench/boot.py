"""`malv bench boot`: boot a headless kernel to the shell prompt and shut it
down, many times in one process; report the median."""

from __future__ import annotations

import statistics
import time

from bench.report import Figure
from kernel import boot


def run(quick: bool = False) -> list[Figure]:
    n = 50 if quick else 200
    boot(seed=0).shutdown()  # warm the program table and imports
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        k = boot(seed=i)
        k.shutdown()
        times.append((time.perf_counter() - t0) * 1e3)
    return [
        Figure("boot.headless_median", statistics.median(times), "ms", target="<= 10 ms"),
        Figure("boot.headless_p95", sorted(times)[int(0.95 * (n - 1))], "ms"),
    ]

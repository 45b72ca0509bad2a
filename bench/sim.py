"""`malv bench sim`: how fast inference stacking simulates, against real time.

The stacking experiment's three tenants (synthetic ResNet-50 service,
ResNet-101 closed loop, BERT best effort) on the a100, under `mps` and under
`lithos` with atomization, one process.  The figure is simulated seconds per
wall-clock second; the design's target for `lithos` is 50.
"""

from __future__ import annotations

import time

from bench.report import Figure
from exp.sharing import RunJob, build_tenants, duration_ns, run_job, sharing_parser
from exp.stacking import ROLES


def run(quick: bool = False) -> list[Figure]:
    seconds = 0.5 if quick else 2.0
    args = sharing_parser(
        "stacking", "", duration_s=seconds, policies=("mps", "lithos")
    ).parse_args(["--duration", str(seconds)])
    duration = duration_ns(args)
    tenants = build_tenants(ROLES, args, 0, duration)
    run_job(RunJob("warm-up", "lithos", {}, tuple(tenants), 0, 10_000_000, 0, "a100"))
    figures = []
    for policy in ("mps", "lithos"):
        t0 = time.perf_counter()
        run_job(RunJob(policy, policy, {}, tuple(tenants), 0, duration, 0, "a100"))
        wall = time.perf_counter() - t0
        figures.append(
            Figure(
                f"sim.stacking_{policy}",
                duration / 1e9 / wall,
                "simulated s per wall s",
                target=">= 50" if policy == "lithos" else None,
            )  # fmt: skip
        )
    return figures

"""`malv bench serve`: does the booted system keep real time while `malv serve` runs?

Each run is `malv serve --loadgen Server` at its defaults (ResNet-50 b4
inference at 20 queries/s, the bound 50 ms at P90) beside
`train:resnet50_b32_training`, under mps and under lithos, three runs each
(seeds 0-2; `--quick`: one 5 s run each).  Per run:

* the lag of virtual time behind the wall clock, sampled every 10 ms while
  LoadGen runs: P50, P99 and max (targets: P99 at most 5 ms, max at most
  50 ms);
* LoadGen's wall-time latency percentiles beside the server's virtual-time
  ones (target: within 10%, or 2 ms);
* LoadGen's verdict (1: VALID, 0: not).

A lagging kernel receives LoadGen's queries in bursts, and then even its
virtual-time latencies measure the host: the lag is the figure to read first.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench.report import Figure
from exp.loadgen.run import serve
from exp.loadgen.settings import ServeSettings

POLICIES = ("mps", "lithos")
COLOCATE = ("train:resnet50_b32_training",)
LAG_P99_MS = 5.0
LAG_MAX_MS = 50.0


def one_run(policy: str, seed: int, seconds: float) -> dict[str, Any]:
    """One `malv serve` run at the defaults beside the training job: its results.json."""
    settings = ServeSettings(policy=policy, colocate=COLOCATE, seed=seed, min_duration_s=seconds)
    with tempfile.TemporaryDirectory() as tmp:
        return serve(settings, Path(tmp) / "serve")


def figures_of(prefix: str, data: dict[str, Any]) -> list[Figure]:
    lag = data["realtime_lag"]
    wall, virtual = data["loadgen"]["latency_ms"], data["server_virtual_latency_ms"]
    out = [
        Figure(f"{prefix}.lag_p50", lag["p50_ms"], "ms"),
        Figure(f"{prefix}.lag_p99", lag["p99_ms"], "ms", target=f"<= {LAG_P99_MS:g}"),
        Figure(f"{prefix}.lag_max", lag["max_ms"], "ms", target=f"<= {LAG_MAX_MS:g}"),
    ]
    for p in (50, 90, 99):
        if f"p{p}" in wall and f"p{p}" in virtual:
            out.append(
                Figure(
                    f"{prefix}.wall_p{p}",
                    wall[f"p{p}"],
                    "ms",
                    baseline=virtual[f"p{p}"],
                    baseline_name=f"virtual P{p}",
                    target="within 10% or 2 ms",
                )  # fmt: skip
            )
    out.append(Figure(f"{prefix}.valid", float(data["result"] == "VALID"), "1 = VALID"))
    return out


def run(quick: bool = False) -> list[Figure]:
    runs, seconds = (1, 5.0) if quick else (3, 10.0)
    figures: list[Figure] = []
    for policy in POLICIES:
        for seed in range(runs):
            figures += figures_of(f"serve.{policy}.run{seed}", one_run(policy, seed, seconds))
    return figures

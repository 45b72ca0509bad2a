"""The figures of the sharing experiments' runs (`exp/sharing`).

Percentiles, SLO attainment, throughput, TPC time and energy of a tenant
over seeds pooled together; runs grouped by label; and what the host's
clock measured, kept apart in timing.json.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from drivers.vgpu.sharing import RunResult
from exp.sharing.catalogue import MS
from exp.sharing.running import RunJob
from exp.sharing.stats import is_unstable, percentile_ci_ms


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) / MS if len(values) else float("nan")


def tenant_latencies(runs: Sequence[RunResult], index: int) -> np.ndarray:
    """Tenant `index`'s request latencies in ns, over `runs` (seeds) pooled in order."""
    return np.concatenate([np.asarray(r.streams[index].latencies_ns, np.float64) for r in runs])


def tenant_figures(runs: Sequence[RunResult], index: int) -> dict[str, Any]:
    """Figures of tenant `index` over `runs` (seeds): latencies pooled, rates
    averaged; each percentile with its bootstrap interval (`exp.sharing.stats`)."""
    streams = [r.streams[index] for r in runs]
    lat = tenant_latencies(runs, index)
    unfinished = sum(s.unfinished for s in streams)
    window_s = sum(r.window_ns for r in runs) / 1e9
    energy = sum(r.energy_j for r in runs)
    first = streams[0]
    out: dict[str, Any] = {
        "tenant": first.name,
        "kind": first.kind,
        "requests": int(len(lat)),
        "p50_ms": _percentile(lat, 50),
        "p95_ms": _percentile(lat, 95),
        "p99_ms": _percentile(lat, 99),
        "p50_ci_ms": percentile_ci_ms(lat, 50),
        "p95_ci_ms": percentile_ci_ms(lat, 95),
        "p99_ci_ms": percentile_ci_ms(lat, 99),
        "unfinished": unfinished,
        "unstable": first.kind == "open" and is_unstable(len(lat), unfinished),
        "mean_ms": float(lat.mean()) / MS if len(lat) else float("nan"),
        "slo_ms": first.slo_ns / MS if first.slo_ns else None,
        "slo_attainment": (
            float((lat <= first.slo_ns).mean()) if first.slo_ns and len(lat) else None
        ),
        "throughput_rps": sum(s.completed for s in streams) / window_s,
        "tpc_seconds": sum(s.busy_tpc_s for s in streams) / len(runs),
        "tpc_seconds_allocated": sum(s.alloc_tpc_s for s in streams) / len(runs),
        "energy_j": energy / len(runs),
        "avg_power_w": energy / window_s,
    }
    return out


def run_figures(runs: Sequence[RunResult]) -> dict[str, Any]:
    """Per-run figures of one configuration: the policy's own report."""
    return {"seeds": len(runs), "extra": [r.extra for r in runs]}


def by_label(jobs: Sequence[RunJob], results: Sequence[RunResult]) -> dict[str, list[RunResult]]:
    """The results of `jobs` grouped by the jobs' labels (one per seed), in order."""
    out: dict[str, list[RunResult]] = {}
    for job, r in zip(jobs, results, strict=True):
        out.setdefault(job.label, []).append(r)
    return out


def run_timing(jobs: Sequence[RunJob], results: Sequence[RunResult], started: float) -> dict:
    """What the host's clock measured, per label: for timing.json, never the
    results, which a seed determines whatever the host's load."""
    runs = by_label(jobs, results)
    return {
        "total_s": round(time.perf_counter() - started, 3),
        "wall_s": {label: [round(r.wall_s, 3) for r in rs] for label, rs in runs.items()},
        "sim_to_wall": {
            label: round(float(np.mean([r.sim_to_wall for r in rs])), 3)
            for label, rs in runs.items()
        },
    }


def timing_line(timing: dict) -> str:
    return "simulated seconds per wall-clock second: " + ", ".join(
        f"{label} {v:.2f}" for label, v in timing["sim_to_wall"].items()
    )


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) and not math.isnan(a) else float("nan")


def fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"

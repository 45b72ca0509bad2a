"""A sweep's points merged into curves (`exp/sweep`).

At each load the runs of every seed are pooled, exactly as `malv exp
stacking` pools its seeds (`exp.sharing.colocation_records`), and LithOS is
compared with MPS, the best of the paper's baselines and the best of all
our policies (`colocation_comparisons`, with paired bootstrap intervals; no
ratio where a queue does not drain).  At the Pareto load, each mechanism at
each slip is set against plain LithOS: what it saves per unit of work, and
what it costs each high-priority tenant's P99.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from drivers.vgpu.sharing import RunResult
from exp.scenario import Scenario
from exp.sharing import (
    colocation_comparisons,
    colocation_records,
    hp_latencies,
    ratio,
    ratio_ci,
    tenant_latencies,
)
from exp.sweep.points import Point

#: What each mechanism saves, per unit of work: (name, per-run measure).
SAVINGS = {
    "dvfs": ("energy_saved", lambda r: r.energy_j),
    "rightsizing": ("capacity_saved", lambda r: sum(s.alloc_tpc_s for s in r.streams)),
}


def measured_tenant(scenario: Scenario) -> str:
    """The tenant whose latency a sweep's curves follow: the first open-loop one."""
    roles = scenario.roles
    return next((r.name for r in roles if r.kind == "open"), roles[0].name)


def merge(
    scenario: Scenario,
    policies: Sequence[str],
    points: Sequence[Point],
    results: dict[str, RunResult],
    axes: dict[str, tuple],
) -> dict[str, Any]:
    hp = measured_tenant(scenario)
    records, isolated, curves = [], [], []
    for load in axes["load"]:
        chosen = [p for p in points if p.load == load and p.slip is None]
        jobs = [p.job for p in chosen]
        runs = [results[p.name] for p in chosen]
        figures = colocation_records(scenario.roles, policies, jobs, runs)
        records += [{"load": load, **r} for r in figures["records"]]
        isolated += [{"load": load, **r} for r in figures["isolated"]]
        latencies = hp_latencies(jobs, runs, hp)
        curves.append({"load": load, **colocation_comparisons(figures, hp, latencies)})
    return {"tenant": hp, "records": records, "isolated": isolated, "curves": curves}


def pareto(
    points: Sequence[Point], results: dict[str, RunResult], load: float, hp: Sequence[str]
) -> list[dict[str, Any]]:
    """Per mechanism and slip: the saving against plain LithOS at `load`,
    and each high-priority tenant's P99 cost with its interval."""
    base = [results[p.name] for p in points if p.label == "lithos" and p.load == load]
    rows = []
    variants = dict.fromkeys((p.label, p.slip) for p in points if p.slip is not None)
    for label, slip in variants:
        mechanism = label.split("+", 1)[1]
        runs = [results[p.name] for p in points if (p.label, p.slip) == (label, slip)]
        key, measure = SAVINGS[mechanism]
        row: dict[str, Any] = {"mechanism": mechanism, "slip": slip, "load": load}
        row[key] = 1 - per_work(runs, measure) / per_work(base, measure)
        row["saved"] = row[key]
        row["p99_cost"] = {}
        for name in hp:
            row["p99_cost"][name] = p99_cost(base, runs, name)
        row["broken_by"] = [t for t, c in row["p99_cost"].items() if not c["cost"] <= slip - 1]
        row["keeps_slip"] = not row["broken_by"]
        rows.append(row)
    return rows


def per_work(runs: Sequence[RunResult], measure) -> float:
    """`measure` summed over runs, per second of work done: every tenant's
    completed requests weighted by its isolated request time."""
    work_s = sum(s.completed * s.request_iso_ns for r in runs for s in r.streams) / 1e9
    return sum(measure(r) for r in runs) / work_s if work_s else float("nan")


def p99_cost(base: Sequence[RunResult], runs: Sequence[RunResult], name: str) -> dict:
    index = [s.name for s in base[0].streams].index(name)
    a, b = tenant_latencies(runs, index), tenant_latencies(base, index)
    cost = ratio(_p99(a), _p99(b)) - 1
    lo, hi = ratio_ci(a, b)
    return {"cost": cost, "ci": [lo - 1, hi - 1], "requests": int(len(a))}


def _p99(latencies: np.ndarray) -> float:
    return float(np.percentile(latencies, 99)) if len(latencies) else float("nan")

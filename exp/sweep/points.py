"""The points of a sweep (`exp/sweep`): one simulated run each.

The cross product of the axes makes, for every load and seed, a run per
policy and a run of each tenant alone on the whole GPU (the isolated
reference); and, at the Pareto load, LithOS with DVFS and with
right-sizing at every slip, beside plain LithOS.  A point's key names its
file in the sweep's `points/` directory, under a digest of everything that
sets its result, so a resumed sweep reuses only points of the same setup.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Sequence

import attrs

from exp.scenario import Scenario
from exp.sharing import POLICY_WEIGHT, RunJob, build_tenants, warmup_ns

#: LithOS mechanisms swept over slip, with their insmod parameters.
MECHANISMS = {"dvfs": {"dvfs": True}, "rightsizing": {"rightsizing": True}}


@attrs.frozen
class Point:
    """One run of a sweep, and where its result is kept."""

    label: str  # a policy, "lithos+MECHANISM", or "isolated TENANT"
    load: float
    seed: int
    slip: float | None
    job: RunJob

    @property
    def name(self) -> str:
        slip = "" if self.slip is None else f"_slip{self.slip:g}"
        label = self.label.replace(" ", "-").replace("+", "-")
        return f"{label}_load{self.load:g}_seed{self.seed}{slip}"


def setup_digest(scenario: Scenario, args: argparse.Namespace, duration: int) -> str:
    """A digest of what, besides a point's own coordinates, sets its result."""
    setup = {
        "roles": [attrs.asdict(r) for r in scenario.roles],
        "duration_ns": duration,
        "gpu": args.gpu,
        "engine": args.engine,
        "trace_dir": args.trace_dir,
        "arrivals": args.arrivals,
        "arrival_speedup": args.arrival_speedup,
    }
    return hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()[:12]


def sweep_points(
    scenario: Scenario,
    policies: Sequence[str],
    axes: dict[str, tuple],
    pareto_load: float | None,
    mechanisms: Sequence[str],
    args: argparse.Namespace,
    duration: int,
) -> list[Point]:
    points = []
    for load in axes["load"]:
        for seed in axes["seed"]:
            tenants = build_tenants(scenario.roles, args, seed, duration, load)
            run = _Runs(tenants, seed, duration, args.gpu, args.engine)
            for tenant in tenants:
                label = f"isolated {tenant.name}"
                job = run.job(label, "mps", {}, (tenant,), 0.3)
                points.append(Point(label, load, seed, None, job))
            for policy in policies:
                job = run.job(policy, policy, {}, tenants, POLICY_WEIGHT.get(policy, 1.0))
                points.append(Point(policy, load, seed, None, job))
            if load != pareto_load:
                continue
            for mechanism in mechanisms:
                label = f"lithos+{mechanism}"
                for slip in axes["slip"]:
                    params = {**MECHANISMS[mechanism], "slip": slip}
                    job = run.job(label, "lithos", params, tenants, POLICY_WEIGHT["lithos"])
                    points.append(Point(label, load, seed, slip, job))
    return points


@attrs.frozen
class _Runs:
    """The runs of one load and seed."""

    tenants: tuple
    seed: int
    duration_ns: int
    gpu: str
    engine: str

    def job(self, label: str, policy: str, params: dict, tenants: tuple, weight: float) -> RunJob:
        warmup = warmup_ns(self.duration_ns)
        return RunJob(label, policy, params, tenants, self.seed, self.duration_ns, warmup,
                      self.gpu, self.engine, weight=weight)  # fmt: skip

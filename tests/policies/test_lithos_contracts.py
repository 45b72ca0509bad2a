"""LithOS's contracts, on mixes of catalogue models and Orion's profiles.

* Right-sizing and DVFS keep every high-priority tenant's P99 within the
  slip of plain LithOS's, on the same arrivals: the bootstrap interval of
  the P99 ratio must reach down to ``slip + TOLERANCE``.  A tenant is
  judged where both runs give it enough requests for a P99 (the default
  tier's short runs: a thin one, as a smoke check).
* Their savings grow with the slip.
* Every high-priority tenant is kept near its own target (its SLO, twice
  its isolated request time), the second one too when it is the bigger
  model.

The mixes are drawn by hypothesis: an open-loop service (Poisson, at a load
up to where MPS still serves it), a closed-loop high-priority tenant and,
sometimes, a best-effort one, each a catalogue model (the synthetic
generator's) or one of Orion's profiles, read from ../shared/workloads.
The default tier draws a few short mixes; `-m slow` runs more, longer.
Each run goes through the path an experiment takes (`exp.sharing.running`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from exp.sharing.figures import tenant_latencies
from exp.sharing.running import RunJob, run_job
from exp.sharing.stats import ratio_ci
from exp.sharing.tenants import Role, build_tenants
from tests.policies.conftest import WORKLOADS

#: One point of tolerance on the slip, as the sweep reports it.
TOLERANCE = 0.01
#: A P99 is judged only from this many requests or more (the experiments'
#: --min-requests rule): from fewer, it is a run's slowest request or two.
#: The default tier's short runs judge from `QUICK_MIN_REQUESTS`, a thin
#: P99 (a smoke check); the slow tier from `MIN_REQUESTS`.
MIN_REQUESTS = 100
QUICK_MIN_REQUESTS = 30
GPU = "a100"
MODELS = ("resnet50", "resnet101", "bert", "mobilenetv2", "transformer_xl")
PROFILES = tuple(
    str(WORKLOADS / "orion" / f"{m}_{b}_fwd.csv")
    for m, b in (("resnet50", 4), ("resnet101", 4), ("bert", 2), ("mobilenetv2", 4),
                 ("transformer_xl", 4))
)  # fmt: skip
HAVE_PROFILES = all(Path(p).is_file() for p in PROFILES)


def _args() -> argparse.Namespace:
    return argparse.Namespace(gpu=GPU, trace_dir=None, arrivals=None, arrival_speedup=1.0)


def role(name: str, model: str, kind: str, **kw) -> Role:
    if model.endswith(".csv"):
        return Role(name, "", kind, profile=model, **kw)
    return Role(name, model, kind, **kw)


@st.composite
def mixes(draw, max_load: float):
    """Roles of a mix and its load: HP A open loop (sized), HP B closed loop,
    and sometimes a best-effort tenant; each a model or a profile."""
    pool = MODELS + (PROFILES if HAVE_PROFILES else ())
    a, b, be = (draw(st.sampled_from(pool)) for _ in range(3))
    roles = [role("HP A", a, "open", sized=True), role("HP B", b, "closed", weight=2.0)]
    if draw(st.booleans()):
        roles.append(role("BE", be, "be"))
    load = draw(st.sampled_from([x for x in (0.5, 1.0, 2.0, 4.0) if x <= max_load]))
    return tuple(roles), load


def run(roles, load, seed, duration_s, policy="lithos", **params):
    duration = int(duration_s * 1e9)
    tenants = build_tenants(roles, _args(), seed, duration, load)
    job = RunJob(policy, policy, params, tenants, seed, duration, duration // 5, GPU)
    return run_job(job)


def mps_serves(result) -> bool:
    """MPS keeps up with the open-loop service: (almost) nothing left queued."""
    s = result.streams[0]
    return s.unfinished <= max(2, s.completed // 50)


def p99_interval(base, runs, index) -> tuple[float, float, float]:
    a, b = tenant_latencies([runs], index), tenant_latencies([base], index)
    lo, hi = ratio_ci(a, b)
    return float(np.percentile(a, 99) / np.percentile(b, 99)), lo, hi


def check_slip(roles, load, seed, duration_s, mechanism, slip, min_requests=MIN_REQUESTS):
    base = run(roles, load, seed, duration_s)
    runs = run(roles, load, seed, duration_s, **{mechanism: True, "slip": slip})
    broken, judged = [], 0
    for i, r in enumerate(roles):
        if (
            r.kind == "be"
            or min(len(x.streams[i].latencies_ns) for x in (base, runs)) < min_requests
        ):
            continue
        judged += 1
        ratio, lo, hi = p99_interval(base, runs, i)
        if not lo <= slip + TOLERANCE:
            broken.append(f"{r.name} ({r.label}): P99 x{ratio:.3f}, interval [{lo:.3f}, {hi:.3f}]")
    assume(judged)  # a mix none of whose tenants gives a P99 says nothing

    assert not broken, f"{mechanism} at slip {slip} on {[r.label for r in roles]}: {broken}"


def fast(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


@pytest.mark.parametrize(
    "mechanism",
    [
        "rightsizing",
        pytest.param(
            "dvfs",
            marks=pytest.mark.xfail(
                strict=True,
                reason="known: DVFS at slip 1.2 slows a closed-loop tenant of Orion's "
                "mobilenetv2 profile beside bert by 25% (docs/lithos-vs-paper.md)",
            ),
        ),
    ],
)
@fast(2)
@given(mix=mixes(max_load=1.0), slip=st.sampled_from([1.05, 1.2]))
def test_each_high_priority_tenant_keeps_within_the_slip(mechanism, mix, slip):
    roles, load = mix
    check_slip(roles, load, 0, 1.0, mechanism, slip, QUICK_MIN_REQUESTS)


@pytest.mark.slow
@pytest.mark.parametrize("mechanism", ["rightsizing", "dvfs"])
@fast(12)
@given(mix=mixes(max_load=4.0), slip=st.sampled_from([1.05, 1.1, 1.2]), seed=st.integers(0, 3))
def test_each_high_priority_tenant_keeps_within_the_slip_on_many_mixes(mechanism, mix, slip, seed):
    roles, load = mix
    mps = run(roles, load, seed, 6.0, policy="mps")
    if not mps_serves(mps):  # beyond where MPS is stable: no contract to keep
        return
    check_slip(roles, load, seed, 6.0, mechanism, slip)


def saved(roles, seed, duration_s, mechanism, slip) -> float:
    """What the mechanism saves against plain LithOS, per isolated second of
    work done: TPC time allocated (right-sizing) or energy (DVFS)."""
    measure = {
        "rightsizing": lambda r: sum(s.alloc_tpc_s for s in r.streams),
        "dvfs": lambda r: r.energy_j,
    }[mechanism]

    def per_work(r):
        return measure(r) / sum(s.completed * s.request_iso_ns for s in r.streams)

    base = run(roles, 1.0, seed, duration_s)
    runs = run(roles, 1.0, seed, duration_s, **{mechanism: True, "slip": slip})
    return 1 - per_work(runs) / per_work(base)


@pytest.mark.parametrize("mechanism", ["rightsizing", "dvfs"])
def test_savings_grow_with_the_slip(mechanism):
    roles = (role("HP A", "resnet50", "open", sized=True),
             role("HP B", "resnet101", "closed", weight=2.0), role("BE", "bert", "be"))  # fmt: skip
    low, high = (saved(roles, 0, 0.6, mechanism, slip) for slip in (1.05, 1.2))
    assert high > low + 0.01, (low, high)


def slo_ratios(roles, seed, duration_s, **params) -> dict[str, float]:
    """Each high-priority tenant's P99 over its SLO."""
    result = run(roles, 1.0, seed, duration_s, **params)
    return {
        s.name: float(np.percentile(s.latencies_ns, 99)) / s.slo_ns
        for s in result.streams
        if s.kind != "be"
    }


@pytest.mark.parametrize(
    "models",
    [("mobilenetv2", "resnet101", "bert"), ("resnet50", "transformer_xl", "bert")],
)
def test_the_second_high_priority_tenant_is_protected_when_it_is_the_bigger(models):
    a, b, be = models
    roles = (role("HP A", a, "open", sized=True), role("HP B", b, "closed", weight=2.0),
             role("BE", be, "be"))  # fmt: skip
    lent = slo_ratios(roles, 0, 0.6)
    assert max(lent.values()) <= 1.0 + TOLERANCE, lent

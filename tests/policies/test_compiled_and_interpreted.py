"""The one loop compiled and the same source interpreted give the same runs.

A policy's callbacks run in the one loop (`drivers/vgpu/sharing/epoch.py`),
compiled by numba, or as they are, step by step, when the loop runs
interpreted: asked for (`Simulation(compiled=False)`), on a device wider
than 63 TPCs, or while a researcher's Python policy is in charge.  Both must
launch the same atoms at the same instants, on the same masks, at the same
priorities and dispatch orders, and so give the same completion times,
latencies, policy figures and energy.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.vgpu.policies import POLICY_NAMES, make_policy
from drivers.vgpu.sharing import Simulation
from tests.policies import golden
from tests.policies.conftest import SPEC
from tests.policies.golden import DURATION_S, Pinned, tenants_of

STACKING, HYBRID = "stacking", "hybrid"


def run(tenants, policy, compiled: bool, *, spec="a100", switch=None, **kw):
    """One run, its loop compiled or interpreted; `switch`: (instant, policy)
    to switch to while running."""
    sim = Simulation(
        tenants, policy, spec=spec, duration_ns=int(DURATION_S * 1e9), warmup_ns=10_000_000,
        trace_window_ns=(0, 40_000_000), compiled=compiled, **kw,
    )  # fmt: skip
    sim.record_launches = True
    if switch is not None:
        when, new = switch
        sim.call_at(when, sim.set_policy, new)
    result = sim.run()
    return sim, result


def assert_same(interpreted, compiled) -> None:
    (sim_i, res_i), (sim_c, res_c) = interpreted, compiled
    log = sim_i.atom_log()
    assert log, "the run launched nothing"
    assert sim_c.atom_log() == log
    for a, b in zip(res_i.streams, res_c.streams, strict=True):
        assert a == b
    assert res_c.extra == res_i.extra
    assert res_c.energy_j == res_i.energy_j
    assert res_c.atoms == res_i.atoms
    assert res_c.clocks == res_i.clocks


@pytest.mark.parametrize("roles", [STACKING, HYBRID], ids=["stacking", "hybrid"])
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", POLICY_NAMES)
def test_every_policy_launches_the_same_atoms_compiled_and_interpreted(name, seed, roles):
    tenants = tenants_of(roles, seed)
    interpreted = run(tenants, make_policy(name), compiled=False)
    compiled = run(tenants, make_policy(name), compiled=True)
    assert interpreted[0].compiled is None, "the loop should have run interpreted"
    assert compiled[0].compiled is not None, f"{name} did not run compiled"
    assert_same(interpreted, compiled)


@pytest.mark.parametrize("name", ["mps", "priority", "lithos"])
def test_compiled_and_interpreted_match_on_the_wave_engine_too(name):
    tenants = tenants_of(STACKING, 0)
    interpreted = run(tenants, make_policy(name), compiled=False, engine_mode="wave")
    compiled = run(tenants, make_policy(name), compiled=True, engine_mode="wave")
    assert compiled[0].gpu.mode == "wave"
    assert compiled[0].compiled is not None
    assert_same(interpreted, compiled)


@pytest.mark.parametrize("roles", [STACKING, HYBRID], ids=["stacking", "hybrid"])
@pytest.mark.parametrize("variant", golden.LITHOS_VARIANTS)
def test_lithos_variants_match_compiled_and_interpreted(variant, roles):
    tenants = tenants_of(roles, 0)
    params = golden.LITHOS_VARIANTS[variant]
    interpreted = run(tenants, make_policy("lithos", **params), compiled=False)
    compiled = run(tenants, make_policy("lithos", **params), compiled=True)
    assert compiled[0].compiled is not None
    assert_same(interpreted, compiled)
    if "dvfs" in params:
        assert compiled[1].clocks, "DVFS never changed the clock"


@pytest.mark.parametrize(
    ("first", "then"),
    [("mps", "lithos"), ("lithos", "mig"), ("mig", "priority")],
)
def test_switching_policies_while_running_matches_compiled_and_interpreted(first, then):
    tenants = tenants_of(STACKING, 0)
    interpreted = run(tenants, make_policy(first), False, switch=(40_000_000, make_policy(then)))
    compiled = run(tenants, make_policy(first), True, switch=(40_000_000, make_policy(then)))
    assert compiled[0].compiled is not None
    assert_same(interpreted, compiled)


def test_a_python_policy_takes_over_a_compiled_run_interpreted_from_that_instant():
    tenants = tenants_of(STACKING, 0)
    interpreted = run(
        tenants, make_policy("lithos", dvfs=True), False, switch=(40_000_000, Pinned())
    )
    handed = run(tenants, make_policy("lithos", dvfs=True), True, switch=(40_000_000, Pinned()))
    assert handed[0].compiled is None, "the run should have gone on interpreted"
    assert handed[0].policy.name == "pinned"
    assert_same(interpreted, handed)


def test_a_python_policy_and_wide_devices_run_interpreted():
    tenants = tenants_of(STACKING, 0)
    sim, _ = run(tenants, Pinned(), True)
    assert sim.compiled is None
    assert {mask for *_, mask, _, _ in sim.atom_log()} == {(1 << (sim.n_tpcs // 2)) - 1}
    sim, _ = run(tenants, make_policy("mps"), True, spec="h100")  # 66 TPCs
    assert sim.compiled is None


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    quotas=st.lists(st.floats(0.05, 1.0), min_size=3, max_size=3),
    max_stolen=st.integers(0, 3),
    max_inflight=st.integers(1, 3),
    atom_max_us=st.integers(20, 600),
    stealing=st.booleans(),
    atomization=st.booleans(),
)
def test_lithos_matches_compiled_and_interpreted_across_its_parameters(
    small_tenants, quotas, max_stolen, max_inflight, atom_max_us, stealing, atomization
):
    def go(compiled):
        policy = make_policy(
            "lithos", quotas=quotas, max_stolen=max_stolen, max_inflight=max_inflight,
            atom_min_ns=min(250_000, atom_max_us * 1000), atom_max_ns=atom_max_us * 1000,
            stealing=stealing, atomization=atomization,
        )  # fmt: skip
        sim = Simulation(small_tenants, policy, spec=SPEC, duration_ns=12_000_000,
                         compiled=compiled)  # fmt: skip
        sim.record_launches = True
        return sim, sim.run()

    interpreted, compiled = go(False), go(True)
    assert interpreted[0].compiled is None
    assert compiled[0].compiled is not None
    assert compiled[0].atom_log() == interpreted[0].atom_log()
    assert compiled[1].streams == interpreted[1].streams
    assert compiled[1].extra == interpreted[1].extra

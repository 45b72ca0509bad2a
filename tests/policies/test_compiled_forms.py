"""The compiled forms of the sharing policies against their Python classes.

A policy's compiled form runs in the one loop (`drivers/vgpu/sharing/epoch.py`);
its Python class (still the booted driver's, until the driver runs the loop)
runs in the same loop as a researcher's Python policy does, interpreted
(`python_form`).  Both must launch the same atoms at the same instants, on
the same masks, at the same priorities and dispatch orders, and so give the
same completion times, latencies and policy figures.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.vgpu.policies import POLICY_NAMES, SharingPolicy, make_policy
from drivers.vgpu.policies.mps import Mps
from drivers.vgpu.sharing import Simulation
from tests.policies import golden
from tests.policies.conftest import SPEC, python_form
from tests.policies.golden import DURATION_S, tenants_of

COMPILED = POLICY_NAMES
STACKING, HYBRID = "stacking", "hybrid"


def run(tenants, policy, compiled: bool, *, spec="a100", switch=None, **kw):
    """One run, of the compiled forms or (not `compiled`) the Python classes;
    `switch`: (instant, policy) to switch to while running."""
    if not compiled:
        python_form(policy)
        if switch is not None:
            python_form(switch[1])
    sim = Simulation(
        tenants, policy, spec=spec, duration_ns=int(DURATION_S * 1e9),
        warmup_ns=10_000_000, trace_window_ns=(0, 40_000_000), **kw,
    )  # fmt: skip
    sim.record_launches = True
    if switch is not None:
        when, new = switch
        sim.call_at(when, sim.set_policy, new)
    result = sim.run()
    return sim, result


def assert_same(python, compiled) -> None:
    (sim_p, res_p), (sim_c, res_c) = python, compiled
    log = sim_p.atom_log()
    assert log, "the run launched nothing"
    assert sim_c.atom_log() == log
    for a, b in zip(res_p.streams, res_c.streams, strict=True):
        assert a == b
    assert res_c.extra == res_p.extra
    assert res_c.energy_j == res_p.energy_j
    assert res_c.atoms == res_p.atoms


@pytest.mark.parametrize("roles", [STACKING, HYBRID], ids=["stacking", "hybrid"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", COMPILED)
def test_compiled_form_launches_exactly_what_the_python_form_does(name, seed, roles):
    tenants = tenants_of(roles, seed)
    python = run(tenants, make_policy(name), compiled=False)
    compiled = run(tenants, make_policy(name), compiled=True)
    assert python[0].compiled is None, "a Python policy runs interpreted"
    assert compiled[0].compiled is not None, f"{name} did not run compiled"
    assert_same(python, compiled)


@pytest.mark.parametrize("name", ["mps", "priority", "lithos"])
def test_compiled_form_matches_python_on_the_wave_engine_too(name):
    tenants = tenants_of(STACKING, 0)
    python = run(tenants, make_policy(name), compiled=False, engine_mode="wave")
    compiled = run(tenants, make_policy(name), compiled=True, engine_mode="wave")
    assert compiled[0].gpu.mode == "wave"
    assert compiled[0].compiled is not None
    assert_same(python, compiled)


#: golden.py's LithOS variants that these tests compare.
LITHOS_VARIANTS = {
    name: golden.LITHOS_VARIANTS[name] for name in ("rightsizing", "trim", "dvfs", "both", "clocks")
}


@pytest.mark.parametrize("roles", [STACKING, HYBRID], ids=["stacking", "hybrid"])
@pytest.mark.parametrize("variant", LITHOS_VARIANTS)
def test_lithos_right_sizing_and_dvfs_compiled_match_python(variant, roles):
    tenants = tenants_of(roles, 0)
    params = LITHOS_VARIANTS[variant]
    python = run(tenants, make_policy("lithos", **params), compiled=False)
    compiled = run(tenants, make_policy("lithos", **params), compiled=True)
    assert compiled[0].compiled is not None
    assert_same(python, compiled)
    if "dvfs" in params:
        assert compiled[1].clocks, "DVFS never changed the clock"
        assert compiled[1].clocks == python[1].clocks


@pytest.mark.parametrize(
    ("first", "then"),
    [("mps", "lithos"), ("lithos", "mig"), ("mig", "priority")],
)
def test_switching_between_compiled_forms_while_running_matches_python(first, then):
    tenants = tenants_of(STACKING, 0)
    python = run(tenants, make_policy(first), False, switch=(40_000_000, make_policy(then)))
    compiled = run(tenants, make_policy(first), True, switch=(40_000_000, make_policy(then)))
    assert compiled[0].compiled is not None
    assert_same(python, compiled)


class Pinned(Mps):
    """A policy of a researcher's own, with no compiled form: MPS, with every
    kernel on the first half of the TPCs."""

    name = "pinned"
    compiled_setup = SharingPolicy.compiled_setup

    def mask(self, s) -> int:
        return (1 << (self.sim.n_tpcs // 2)) - 1


def test_a_policy_with_no_compiled_form_takes_over_in_python_from_that_instant():
    tenants = tenants_of(STACKING, 0)
    python = run(tenants, make_policy("lithos", dvfs=True), False, switch=(40_000_000, Pinned()))
    handed = run(tenants, make_policy("lithos", dvfs=True), True, switch=(40_000_000, Pinned()))
    assert handed[0].compiled is None, "the run should have gone on in Python"
    assert handed[0].policy.name == "pinned"
    assert_same(python, handed)
    assert handed[1].clocks == python[1].clocks


def test_a_policy_with_no_compiled_form_and_wide_devices_run_in_python():
    tenants = tenants_of(STACKING, 0)
    sim, _ = run(tenants, Pinned(), True)
    assert sim.compiled is None
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
def test_lithos_compiled_matches_python_across_its_parameters(
    small_tenants, quotas, max_stolen, max_inflight, atom_max_us, stealing, atomization
):
    def policy():
        return make_policy(
            "lithos", quotas=quotas, max_stolen=max_stolen, max_inflight=max_inflight,
            atom_min_ns=min(250_000, atom_max_us * 1000), atom_max_ns=atom_max_us * 1000,
            stealing=stealing, atomization=atomization,
        )  # fmt: skip

    def go(compiled):
        made = policy() if compiled else python_form(policy())
        sim = Simulation(small_tenants, made, spec=SPEC, duration_ns=12_000_000)
        sim.record_launches = True
        return sim, sim.run()

    python, compiled = go(False), go(True)
    assert python[0].compiled is None
    assert compiled[0].compiled is not None
    assert compiled[0].atom_log() == python[0].atom_log()
    assert compiled[1].streams == python[1].streams
    assert compiled[1].extra == python[1].extra

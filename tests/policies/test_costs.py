"""The real systems' documented costs, as the policies' parameters (docs/policy-audit.md).

Each cost is a parameter of its policy: refused at the edge when out of
range, at its sourced default (or 0, the idealised form, where no figure
is sourced), and with the effect its source documents.
"""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.vgpu.policies import make_policy, policy_class
from drivers.vgpu.sharing import Tenant
from drivers.vgpu.sharing.advised import policy_kwargs
from drivers.vgpu.sharing.sim import HOST_LAUNCH_NS
from tests.policies.conftest import SPEC, kernel, simulate, workload
from tests.policies.golden import tenants_of
from tests.policies.test_compiled_and_interpreted import HYBRID, STACKING, assert_same, run

#: (policy, module parameter, constructor keyword, lowest value in us).
COSTS = [
    ("tgs", "period_us", "period_ns", 1),
    ("tgs", "poll_us", "poll_ns", 0),
    ("reef", "preempt_us", "preempt_ns", 0),
    ("orion", "decision_us", "decision_ns", 0),
    ("mig", "reconfigure_us", "reconfigure_ns", 0),
]


@pytest.mark.parametrize("policy, param, keyword, lowest", COSTS)
@settings(max_examples=25, deadline=None)
@given(us=st.integers(min_value=-(10**9), max_value=10**9))
def test_a_cost_parameter_out_of_range_is_refused_with_its_name(policy, param, keyword, lowest, us):
    if us < lowest:
        with pytest.raises(ValueError, match=f"{param} must be at least {lowest} us, got {us}"):
            policy_kwargs(policy, {param: us})
        with pytest.raises(ValueError, match=f"{policy}: "):
            make_policy(policy, **{keyword: us * 1000})
    else:
        kwargs = policy_kwargs(policy, {param: str(us)})
        assert kwargs == {keyword: us * 1000}
        assert getattr(make_policy(policy, **kwargs), keyword) == us * 1000


def test_the_costs_default_to_their_sourced_figures_or_to_zero_where_unsourced():
    # TGS's released code: the rate is reported every 5000 ms, a held launch
    # sleeps TIME_TICK = 10 ms (pkusys/TGS hijack/); REEF's depth 12 is Orion's
    # artifact's --reef_depth.  Unsourced: REEF's reset cost and Orion's
    # per-kernel decision (0), MIG's reconfiguration (1 s, the old default).
    assert policy_class("tgs").module_params()["period_us"] == 5_000_000
    assert policy_class("tgs").module_params()["poll_us"] == 10_000
    assert policy_class("reef").module_params() == {"batch_depth": 12, "preempt_us": 0}
    assert policy_class("orion").module_params()["decision_us"] == 0
    assert policy_class("mig").module_params()["reconfigure_us"] == 1_000_000


def be_beside_hp(hp_arrival_ns: int) -> tuple[Tenant, Tenant]:
    """A best-effort job of long kernels, always on the device, and one
    high-priority request of one short kernel arriving at `hp_arrival_ns`."""
    be = Tenant("be", workload("be", [kernel("be", 2 * SPEC.n_tpcs, 200_000)]), "be", run_ahead=4)
    hp = workload("hp", [kernel("hp", SPEC.n_tpcs, 20_000)])
    return Tenant("hp", hp, "open", (hp_arrival_ns,)), be


def hp_launches(sim) -> list[int]:
    return [launch for stream, launch, *_ in sim.atom_log() if stream == 0]


@pytest.mark.parametrize("preempt_ns", [30_000, 250_000])
def test_reef_preemption_delays_a_high_priority_kernel_by_its_cost(preempt_ns):
    tenants = be_beside_hp(1_000_000)
    free, free_result = simulate(make_policy("reef"), tenants, 3_000_000)
    paid, paid_result = simulate(make_policy("reef", preempt_ns=preempt_ns), tenants, 3_000_000)
    (free_launch,), (paid_launch,) = hp_launches(free), hp_launches(paid)
    assert paid_launch - free_launch == preempt_ns
    assert free_result.extra["preemptions"] == 0
    assert paid_result.extra["preemptions"] == 1


def test_reef_preemption_costs_nothing_when_no_best_effort_kernel_is_on_the_device():
    hp, _ = be_beside_hp(1_000_000)
    _, free = simulate(make_policy("reef"), (hp,), 3_000_000)
    _, paid = simulate(make_policy("reef", preempt_ns=100_000), (hp,), 3_000_000)
    assert paid.extra["preemptions"] == 0
    assert paid.streams[0].latencies_ns == free.streams[0].latencies_ns


def orion_alone(decision_ns: int, n_kernels: int = 3):
    """A high-priority tenant alone under Orion: two requests of `n_kernels`
    kernels of 30 us, which its host enqueues back to back."""
    hp = workload("hp", [kernel(f"hp{i}", SPEC.n_tpcs, 30_000) for i in range(n_kernels)])
    alone = (Tenant("hp", hp, "open", (500_000, 2_000_000)),)
    return simulate(make_policy("orion", decision_ns=decision_ns), alone, 4_000_000)


@pytest.mark.parametrize("decision_ns", [10_000, 25_000])
def test_orion_decision_shorter_than_a_kernel_delays_a_request_once(decision_ns):
    # The thread decides on each kernel while the one before it runs: only
    # the request's first kernel waits for its decision.
    _, free = orion_alone(0)
    _, paid = orion_alone(decision_ns)
    assert len(free.streams[0].latencies_ns) == 2
    for a, b in zip(free.streams[0].latencies_ns, paid.streams[0].latencies_ns, strict=True):
        assert b - a == decision_ns


def test_orion_decision_longer_than_a_kernel_paces_every_kernel():
    # One thread, one decision at a time: kernels reach the device no closer
    # together than a decision, and each request pays for all of them.
    sim, paid = orion_alone(80_000)
    launches = [launch for _, launch, *_ in sim.atom_log()]
    assert len(launches) == 6
    for request in (launches[:3], launches[3:]):
        assert [b - a for a, b in pairwise(request)] == [80_000, 80_000]
    _, free = orion_alone(0)
    for a, b in zip(free.streams[0].latencies_ns, paid.streams[0].latencies_ns, strict=True):
        assert b - a >= 3 * 80_000 - 2 * 30_000


def test_tgs_poll_holds_a_launch_over_the_limit_for_whole_polls():
    # Rate 1000/s and one token to start: the second kernel, ready a host
    # launch after the first completes (25 us on), waits just under 1 ms for its token; polling
    # every P, as TGS's rate_limiter sleeps, it waits whole polls.
    be = Tenant("be", workload("be", [kernel("b", 4, 20_000)]), "be")
    hp = Tenant("hp", workload("hp", [kernel("h", 4, 20_000)]), "open", ())

    def held_ns(poll_ns: int) -> int:
        policy = make_policy("tgs", initial_rate_per_s=1000.0, poll_ns=poll_ns)
        sim, _ = simulate(policy, (hp, be), 12_000_000)
        log = [row for row in sim.atom_log() if row[0] == 1]
        ready = log[0][2] + HOST_LAUNCH_NS  # the host's next launch after the first completes
        return log[1][1] - ready

    due = held_ns(0)
    assert 900_000 < due < 1_000_000
    assert held_ns(7_000_000) == 7_000_000
    assert held_ns(400_000) == 3 * 400_000


def test_tgs_adapts_only_once_per_control_period():
    hp = Tenant("hp", workload("hp", [kernel("h", 8, 20_000)]), "open", ())
    be = Tenant("be", workload("be", [kernel("b", 8, 20_000)]), "be")
    policy = make_policy("tgs", period_ns=20_000_000, poll_ns=0)
    _, result = simulate(policy, (hp, be), 50_000_000)
    # Nothing high-priority runs, so nothing drops: two periods of slow start.
    assert result.extra["final_rate_per_s"] == 200.0 * 2 * 2


COSTLY = {
    "tgs": {"period_ns": 10_000_000, "poll_ns": 3_000_000},
    "reef": {"preempt_ns": 50_000},
    "orion": {"decision_ns": 20_000},
}


@pytest.mark.parametrize("roles", [STACKING, HYBRID], ids=["stacking", "hybrid"])
@pytest.mark.parametrize("name", COSTLY)
def test_costs_launch_the_same_atoms_compiled_and_interpreted(name, roles):
    tenants = tenants_of(roles, 0)
    interpreted = run(tenants, make_policy(name, **COSTLY[name]), compiled=False)
    compiled = run(tenants, make_policy(name, **COSTLY[name]), compiled=True)
    assert compiled[0].compiled is not None
    assert_same(interpreted, compiled)

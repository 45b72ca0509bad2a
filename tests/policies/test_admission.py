"""Defining behaviours of tgs, reef and orion: when best-effort kernels may run."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from drivers.vgpu.policies import make_policy
from drivers.vgpu.sharing import Simulation, Tenant
from drivers.vgpu.sharing.arrivals import poisson_times_ns
from drivers.vgpu.sharing.compiled import AT_POS
from tests.policies.conftest import SPEC, kernel, policy_state, simulate, workload


def be_launches(sim) -> list[tuple[int, Any, int, list | None]]:
    """Each best-effort launch, from the atom log: (time, stream, kernel
    position, running), `running` the high-priority kernels on the device
    then, as (stream, position, ready time).

    REEF and Orion launch a high-priority kernel whole the instant it is
    ready, so its atom's span is its time on the device, and an atom with a
    lower id was launched first.  A high-priority kernel that finished at
    the very instant of a launch is a tie the log does not order: `running`
    is then None."""
    position = sim.loop.dev.atoms[AT_POS]
    latest: dict[Any, int] = {}  # high-priority stream -> its latest atom so far
    log = sim.atom_log()
    out = []
    for a, (i, t, *_) in enumerate(log):
        s = sim.streams[i]
        if s.hp:
            latest[s] = a
            continue
        running: list | None = []
        for h, atom in latest.items():
            done = log[atom][2]
            if done == t:
                running = None
                break
            if done < 0 or done > t:
                running.append((h, int(position[atom]), log[atom][1]))
        out.append((t, s, int(position[a]), running))
    return out


def mixed_tenants():
    hp = workload(
        "hp",
        [kernel("c1", 20, 60_000, mem=0.2), kernel("m1", 8, 90_000, mem=0.8),
         kernel("c2", 28, 40_000, mem=0.2)],
    )  # fmt: skip
    be = workload(
        "be",
        [kernel("short", 4, 10_000, mem=0.8), kernel("wide", 40, 10_000, mem=0.8),
         kernel("long", 4, 200_000, mem=0.2), kernel("c", 6, 20_000, mem=0.2)],
    )  # fmt: skip
    arrivals = poisson_times_ns(2000.0, 30_000_000, seed=1)
    return Tenant("hp", hp, "open", arrivals), Tenant("be", be, "be")


def test_reef_pads_only_shorter_and_narrower_kernels_beside_running_hp_work():
    sim, result = simulate("reef", mixed_tenants(), 30_000_000)
    beside = [(t, s, k, running) for t, s, k, running in be_launches(sim) if running]
    assert beside, "some best-effort kernels were padded"
    for t, s, k, running in beside:
        for h, pos, ready in running:
            assert s.iso_ns[k] < ready + h.iso_ns[pos] - t
            assert s.sms[k] <= h.sms[pos]
    assert result.extra["padded"] > 0 and result.extra["batches"] > 0
    assert result.streams[1].completed > 0


def test_reef_releases_best_effort_work_in_batches_when_no_hp_work_is_pending():
    hp, be = mixed_tenants()
    policy = make_policy("reef", batch_depth=3)
    sim, result = simulate(
        policy, (Tenant("hp", hp.workload, "open", (50_000_000,)), be), 5_000_000
    )
    log = be_launches(sim)
    # Alone, BE runs back to back; one release in three starts a batch.
    assert len(log) >= 9 and result.extra["batches"] == -(-len(log) // 3)


def test_orion_admits_best_effort_kernels_only_within_its_three_limits():
    policy = make_policy("orion", duration_cap_ns=60_000, sm_threshold=2 * SPEC.n_tpcs)
    sim, result = simulate(policy, mixed_tenants(), 30_000_000)
    log = be_launches(sim)
    beside = [entry for entry in log if entry[3]]
    assert beside and [entry for entry in log if entry[3] == []], "admitted beside HP and not"
    for _, s, k, running in beside:
        assert s.iso_ns[k] <= 60_000  # the duration cap (nothing else outstanding)
        assert s.sms[k] <= 2 * SPEC.n_tpcs
        for h, pos, _ in running:
            assert -1 in (s.profiles[k], h.profiles[pos]) or s.profiles[k] != h.profiles[pos]
    assert result.extra["admitted_hp_idle"] > 0


def rates_after_each_period(sim: Simulation, period_ns: int) -> list[float]:
    """The best-effort rate TGS sets at the end of each control period (it
    controls every `period_ns` from the start), read from its named state
    just after, while `sim` runs; the list fills as it runs."""
    rates: list[float] = []

    def sample(period: int) -> None:
        st = policy_state(sim)
        assert st["n_rates"] == period, "one control per period"
        rates.append(float(st["rate_per_s"]))

    for period in range(1, sim.duration_ns // period_ns):
        sim.call_at(period * period_ns + 1, sample, period)
    return rates


def test_tgs_slow_start_doubles_then_aimd_halves_and_adds():
    hp = Tenant("hp", workload("hp", [kernel("h", 28, 30_000, mem=0.8)]), "closed")
    be = Tenant("be", workload("be", [kernel("b", 28, 30_000, mem=0.8)]), "be")
    policy = make_policy("tgs", period_ns=1_000_000, initial_rate_per_s=1000.0,
                         additive_per_s=500.0)  # fmt: skip
    sim = Simulation((hp, be), policy, spec=SPEC, duration_ns=60_000_000)
    rates = rates_after_each_period(sim, policy.period_ns)
    result = sim.run()
    first_drop = next(i for i in range(1, len(rates)) if rates[i] < rates[i - 1])
    assert rates[0] == 2 * 1000.0  # slow start
    assert all(b == 2 * a for a, b in pairwise(rates[:first_drop]))
    assert rates[first_drop] == rates[first_drop - 1] / 2  # interference: halve
    after = rates[first_drop:]
    for a, b in pairwise(after):
        assert b in (a + 500.0, max(policy.min_rate_per_s, a / 2))
    assert result.extra["decreases"] > 0


def test_tgs_lets_best_effort_grow_when_nothing_high_priority_runs():
    be = Tenant("be", workload("be", [kernel("b", 8, 20_000)]), "be")
    hp = Tenant("hp", workload("hp", [kernel("h", 8, 20_000)]), "open", ())
    policy = make_policy("tgs", period_ns=1_000_000, initial_rate_per_s=100.0)
    _, result = simulate(policy, (hp, be), 20_000_000)
    assert result.extra["decreases"] == 0
    assert result.extra["final_rate_per_s"] >= 100.0 * 2**10

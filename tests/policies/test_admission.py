"""Defining behaviours of tgs, reef and orion: when best-effort kernels may run."""

from __future__ import annotations

from itertools import pairwise

from drivers.vgpu.policies import make_policy
from drivers.vgpu.sharing import Tenant
from drivers.vgpu.sharing.arrivals import poisson_times_ns
from tests.policies.conftest import SPEC, kernel, simulate, workload


def record_be_launches(policy):
    """Wrap the policy's release of held kernels: log (time, stream, kernel, HP streams busy)."""
    log = []
    release = policy.launch_whole

    def launch_whole(s, order=None):
        sim = policy.sim
        if not s.hp:
            running = [h for h in sim.streams if h.hp and h.has_kernel]
            log.append((sim.now_ns, s, s.pos, [(h, h.pos, h.ready_ns) for h in running]))
        return release(s, order)

    policy.launch_whole = launch_whole
    return log


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
    policy = make_policy("reef")
    log = record_be_launches(policy)
    _, result = simulate(policy, mixed_tenants(), 30_000_000)
    beside = [(t, s, k, running) for t, s, k, running in log if running]
    assert beside, "some best-effort kernels were padded"
    for t, s, k, running in beside:
        for h, pos, ready in running:
            assert s.iso_ns[k] < ready + h.iso_ns[pos] - t
            assert s.sms[k] <= h.sms[pos]
    assert policy.padded > 0 and policy.batched > 0
    assert result.streams[1].completed > 0


def test_reef_releases_best_effort_work_in_batches_when_no_hp_work_is_pending():
    hp, be = mixed_tenants()
    policy = make_policy("reef", batch_depth=3)
    log = record_be_launches(policy)
    simulate(policy, (Tenant("hp", hp.workload, "open", (50_000_000,)), be), 5_000_000)
    # Alone, BE runs back to back; one release in three starts a batch.
    assert len(log) >= 9 and policy.batched == -(-len(log) // 3)


def test_orion_admits_best_effort_kernels_only_within_its_three_limits():
    policy = make_policy("orion", duration_cap_ns=60_000, sm_threshold=2 * SPEC.n_tpcs)
    log = record_be_launches(policy)
    simulate(policy, mixed_tenants(), 30_000_000)
    beside = [entry for entry in log if entry[3]]
    assert beside and len(beside) < len(log)
    for _, s, k, running in beside:
        assert s.iso_ns[k] <= 60_000  # the duration cap (nothing else outstanding)
        assert s.sms[k] <= 2 * SPEC.n_tpcs
        for h, pos, _ in running:
            assert -1 in (s.profiles[k], h.profiles[pos]) or s.profiles[k] != h.profiles[pos]
    assert policy.admitted_idle > 0


def test_tgs_slow_start_doubles_then_aimd_halves_and_adds():
    hp = Tenant("hp", workload("hp", [kernel("h", 28, 30_000, mem=0.8)]), "closed")
    be = Tenant("be", workload("be", [kernel("b", 28, 30_000, mem=0.8)]), "be")
    policy = make_policy("tgs", period_ns=1_000_000, initial_rate_per_s=1000.0,
                         additive_per_s=500.0)  # fmt: skip
    simulate(policy, (hp, be), 60_000_000)
    rates = [r for _, r in policy.rates]
    first_drop = next(i for i in range(1, len(rates)) if rates[i] < rates[i - 1])
    assert rates[0] == 2 * 1000.0  # slow start
    assert all(b == 2 * a for a, b in pairwise(rates[:first_drop]))
    assert rates[first_drop] == rates[first_drop - 1] / 2  # interference: halve
    after = rates[first_drop:]
    for a, b in pairwise(after):
        assert b in (a + 500.0, max(policy.min_rate_per_s, a / 2))
    assert policy.decreases > 0


def test_tgs_lets_best_effort_grow_when_nothing_high_priority_runs():
    be = Tenant("be", workload("be", [kernel("b", 8, 20_000)]), "be")
    hp = Tenant("hp", workload("hp", [kernel("h", 8, 20_000)]), "open", ())
    policy = make_policy("tgs", period_ns=1_000_000, initial_rate_per_s=100.0)
    simulate(policy, (hp, be), 20_000_000)
    assert policy.decreases == 0 and policy.rate_per_s >= 100.0 * 2**10

"""LithOS: the TPC scheduler, stealing, atoms, right-sizing, DVFS and the predictor."""

from __future__ import annotations

from itertools import pairwise

import pytest

from drivers.vgpu.lithos import Atomizer, DvfsGovernor, LatencyPredictor, RightSizer, TpcScheduler
from drivers.vgpu.lithos.rightsizing import knee
from drivers.vgpu.lithos.tpcs import largest_remainder
from drivers.vgpu.policies import make_policy
from drivers.vgpu.sharing import Tenant
from drivers.vgpu.sharing.sim import HOST_LAUNCH_NS
from tests.policies.conftest import SPEC, blocks_of, kernel, simulate, workload


def stealing_scenario(arrival_ns: int):
    """HP owns TPCs 0-6 and is idle until `arrival_ns`; BE owns 7-13 and runs 1 ms kernels."""
    be = Tenant("be", workload("be", [kernel("long", 280, 100_000)]), "be", quota=0.5)
    hp = Tenant("hp", workload("hp", [kernel("a", 14, 20_000), kernel("b", 14, 20_000)]),
                "open", (arrival_ns,), quota=0.5)  # fmt: skip
    return hp, be


@pytest.mark.parametrize("arrival_ns", [3_050_000, 3_333_000, 4_710_000])
def test_an_owner_waits_at_most_one_atom_for_its_tpcs(arrival_ns):
    policy = make_policy("lithos")
    sim, result = simulate(policy, stealing_scenario(arrival_ns), 8_000_000, record_blocks=True)
    hp_tpcs = policy.tpcs.own_mask[0]
    be_blocks = blocks_of(sim, 1)
    # While HP was idle, BE stole its TPCs ...
    assert [b for b in be_blocks if b.start_ns < arrival_ns and hp_tpcs >> b.tpc & 1]
    # ... and HP got them back within one atom (here: one 100 us block).
    first = min(b.start_ns for b in blocks_of(sim, 0))
    assert first - arrival_ns <= 100_000 <= policy.atom_max_ns
    # The HP request ran on its own TPCs at full speed once it had them.
    assert result.streams[0].latencies_ns[0] <= (first - arrival_ns) + 2 * 20_000
    # No stolen BE block started on HP's TPCs while HP's request ran.
    hp_end = max(b.end_ns for b in blocks_of(sim, 0))
    assert not [b for b in be_blocks if arrival_ns <= b.start_ns < hp_end and hp_tpcs >> b.tpc & 1]


def test_stolen_atoms_are_bounded_and_outranked(small_tenants):
    policy = make_policy("lithos", max_stolen=1)
    sim, _ = simulate(policy, small_tenants, 8_000_000)
    assert policy.stolen_atoms > 0
    for i in range(3):
        spans = sorted(
            (launch, done)
            for a, (stream, launch, done, *_) in enumerate(sim.atom_log())
            if stream == i and sim.atom_stolen[a] and done > 0
        )
        # A new stolen atom is launched only once the last one is back.
        assert all(b[0] >= a[1] for a, b in pairwise(spans))


def test_atoms_of_a_long_kernel_last_250_to_500_us():
    policy = make_policy("lithos")
    t = Tenant("t", workload("t", [kernel("k", 28 * 40, 50_000)]), "closed", quota=1.0)
    sim, _ = simulate(policy, (t,), 6_000_000)
    durations = [
        done - launch
        for a, (_, launch, done, *_) in enumerate(sim.atom_log())
        if done >= 0 and not sim.atom_stolen[a]
    ]
    # A 2 ms kernel becomes four 500 us atoms (the second one of each pair waits
    # for the first, so its span counts from its launch with the first).
    assert policy.atomizer.atoms > 0 and len(durations) >= 8
    assert max(durations) <= 2 * 500_000 and min(durations) >= 250_000


def test_atomizer_cuts_evenly_and_never_splits_a_block():
    a = Atomizer(250_000, 500_000)
    assert a.atom_blocks(100, 10, 2, 10_000) == 100  # 50 us in all: one atom
    blocks = a.atom_blocks(20 * 20, 10, 2, 100_000)  # 20 waves of 100 us
    assert blocks == 5 * 20  # 2 ms -> four atoms of 5 waves (500 us)
    assert a.atom_blocks(20, 10, 2, 900_000) == 20  # one 900 us wave: cannot split
    for waves in range(1, 40):
        n = a.atom_blocks(waves * 20, 10, 2, 60_000) // 20
        total = waves * 60_000
        assert n * 60_000 <= 500_000 or n == 1
        assert total <= 500_000 or n * 60_000 >= 250_000


def test_right_sizer_fits_l_of_t_and_keeps_within_the_slip():
    sizer = RightSizer(slip=1.1)
    grid, bpt = 1000, 2
    assert sizer.choose("k", grid, bpt, 54) == 50  # 10 waves: no TPC the grid cannot use
    m, b = 2_000_000.0, 50_000.0
    for t in (50, 46, 42, 40):
        sizer.observe("k", t, m / t + b)
    fit_m, fit_b = sizer.model("k")
    assert fit_m == pytest.approx(m) and fit_b == pytest.approx(b)
    t = sizer.choose("k", grid, bpt, 54)
    assert m / t + b <= 1.1 * (m / 50 + b)
    smaller = max(k for k in (knee(grid, bpt, w) for w in range(1, 200)) if k < t)
    assert m / smaller + b > 1.1 * (m / 50 + b) or smaller < 20  # t is the smallest knee allowed


def test_right_sizer_trims_a_small_grid_to_the_tpcs_it_occupies():
    sizer = RightSizer(fit=False)
    assert sizer.choose("k", 10, 2, 54) == 5
    assert sizer.choose("k", 200, 2, 54) == 50  # two waves on 54 TPCs, two on 50


def test_right_sizing_in_the_simulator_saves_tpc_time_within_the_slip():
    kernels = [kernel("small", 10, 20_000), kernel("big", 300, 30_000, mem=0.8)]
    t = Tenant("t", workload("t", kernels), "closed", quota=1.0)
    runs = {}
    for rs in (False, True):
        policy = make_policy("lithos", rightsizing=rs)
        _, result = simulate(policy, (t,), 20_000_000, warmup_ns=5_000_000)
        s = result.streams[0]
        runs[rs] = (s.alloc_tpc_s / s.completed, max(s.latencies_ns))
    assert runs[True][0] < 0.8 * runs[False][0]
    assert runs[True][1] <= 1.1 * runs[False][1]


def test_dvfs_governor_sets_the_clock_from_the_runtime_weighted_sensitivity():
    gov = DvfsGovernor(SPEC, slip=1.1, min_interval_ns=0)
    f_max = SPEC.max_clock_mhz
    gov.observe("compute", 100_000, f_max)
    gov.observe("memory", 300_000, f_max)
    # Seen only at f_max: counted as fully sensitive, so f = f_max / 1.1.
    step = SPEC.clock_step_mhz
    assert (
        gov.target_mhz() == SPEC.min_clock_mhz + (f_max / 1.1 - SPEC.min_clock_mhz) // step * step
    )
    f = 1110
    gov.observe("compute", round(100_000 * f_max / f), f)  # s = 1
    gov.observe("memory", 300_000, f)  # s = 0
    gov.target_mhz()  # a decision: the window starts afresh
    assert gov.sensitivity("compute") == pytest.approx(1.0, abs=1e-3)
    assert gov.sensitivity("memory") == pytest.approx(0.0, abs=1e-3)
    gov.observe("compute", 100_000, f_max)
    gov.observe("memory", 300_000, f_max)
    S = 0.25
    expect = f_max / (1 + 0.1 / S)
    target = gov.target_mhz()
    assert target <= expect < target + SPEC.clock_step_mhz


def test_dvfs_governor_returns_to_f_max_for_unseen_kernels_and_is_rate_limited():
    gov = DvfsGovernor(SPEC, min_interval_ns=100)
    gov.observe("new", 1000, 900)  # never seen at f_max
    assert gov.target_mhz() == SPEC.max_clock_mhz
    gov.observe("k", 1000, SPEC.max_clock_mhz)
    assert gov.decide(0, SPEC.max_clock_mhz) is not None
    gov.observe("k", 1000, SPEC.max_clock_mhz)
    assert gov.decide(50, SPEC.max_clock_mhz) is None  # too soon after the last change


def test_dvfs_in_the_simulator_lowers_the_clock_and_saves_energy():
    kernels = [kernel("c", 28, 50_000, mem=0.2), kernel("m", 28, 50_000, mem=0.8)]
    t = Tenant("t", workload("t", kernels), "closed", quota=1.0)
    energy = {}
    for dvfs in (False, True):
        policy = make_policy("lithos", dvfs=dvfs, dvfs_period_ns=5_000_000,
                             dvfs_min_interval_ns=10_000_000)  # fmt: skip
        _, result = simulate(policy, (t,), 200_000_000, warmup_ns=60_000_000)
        energy[dvfs] = result.energy_j / result.streams[0].completed
        if dvfs:
            assert policy.requested_mhz < SPEC.max_clock_mhz
            changes = [t for t, _ in result.clocks]
            assert all(b - a >= 10_000_000 for a, b in pairwise(changes))
    assert energy[True] < 0.95 * energy[False]


def test_predictor_counts_errors_over_50_us_as_mispredictions():
    p = LatencyPredictor(threshold_ns=50_000, weight=1.0)
    p.observe("k", 2, 200_000, None)  # first sight: no prediction to judge
    assert p.predict("k", 3) == 300_000
    p.observe("k", 3, 340_000, p.predict("k", 3))  # off by 40 us
    p.observe("k", 1, 200_000, p.predict("k", 1))  # off by ~87 us
    assert p.predictions == 2 and p.mispredictions == 1 and p.misprediction_rate == 0.5


def test_tpc_quotas_are_contiguous_and_stealing_needs_idle_tpcs():
    tpcs = TpcScheduler(14, [0.5, 0.5], max_stolen=1)
    assert tpcs.own_mask == [0x7F, 0x7F << 7]
    assert tpcs.stealable(1, 0) == 0x7F
    tpcs.claim(0b11, 1_000)
    assert tpcs.stealable(1, 500) == 0x7C and tpcs.stealable(1, 1_000) == 0x7F
    tpcs.stolen_out[1] = 1
    assert tpcs.stealable(1, 2_000) == 0


def test_largest_remainder_gives_each_positive_share_at_least_one():
    assert largest_remainder([0.611, 0.259, 0.13], 7) == [4, 2, 1]
    assert largest_remainder([4 / 7, 2 / 7, 1 / 7], 54) == [31, 15, 8]
    assert largest_remainder([0.0, 0.0], 10) == [5, 5]
    assert sum(largest_remainder([0.3, 0.3], 54)) == 32


def test_a_tenant_without_quota_runs_on_stolen_tpcs_only():
    owner = Tenant("owner", workload("o", [kernel("o", 14, 100_000)]), "open",
                   (0, 2_000_000), quota=1.0)  # fmt: skip
    borrower = Tenant("borrower", workload("b", [kernel("b", 4, 50_000)]), "be", quota=0.0)
    policy = make_policy("lithos")
    sim, result = simulate(policy, (owner, borrower), 4_000_000, record_blocks=True)
    assert policy.tpcs.own_mask[1] == 0
    stolen = blocks_of(sim, 1)
    assert stolen and all(sim.atom_stolen[b.atom_id] for b in stolen)
    # It stole the idle TPCs as soon as its first launch reached the GPU; the
    # owner's request arrived at once too, and got them back within one atom ...
    assert min(b.start_ns for b in stolen) == HOST_LAUNCH_NS
    assert min(b.start_ns for b in blocks_of(sim, 0)) <= HOST_LAUNCH_NS + 50_000
    # ... and it waited while the owner ran, then went on.
    owner_end = min(b.end_ns for b in blocks_of(sim, 0))
    assert not [b for b in stolen if HOST_LAUNCH_NS + 50_000 < b.start_ns < owner_end]
    assert result.streams[1].completed > 10

"""LithOS: the TPC scheduler, stealing, atoms, right-sizing, DVFS and the predictor.

The mechanisms are tested on the policy's own functions
(`drivers/vgpu/policies/lithos.py`), called from Python, interpreted, on its
state as `Lithos.compiled_setup` sets it up; the rest on simulations, with the
policy compiled as it ships.
"""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.vgpu.lithos import TpcScheduler, largest_remainder
from drivers.vgpu.policies import make_policy
from drivers.vgpu.policies.lithos import (
    STATE,
    atom_blocks,
    choose,
    claim,
    decide,
    governor_observe,
    kernel_of,
    knee,
    observe,
    sizer_observe,
    state,
    stealable,
    target_mhz,
)
from drivers.vgpu.sharing import Simulation, Tenant
from drivers.vgpu.sharing.compiled import ST_HP, state_values
from drivers.vgpu.sharing.epoch_run import LoopRun
from drivers.vgpu.sharing.sim import HOST_LAUNCH_NS
from tests.policies.conftest import SPEC, blocks_of, kernel, policy_state, simulate, workload


def lithos_run(quotas=(0.5, 0.5), **params) -> LoopRun:
    """LithOS with `params`, set up on tenants of `quotas` (two kernels each)
    and not started, as the interpreted loop holds it: the policy's
    functions take its ``dev`` and ``pol`` as the loop passes them."""
    tenants = tuple(
        Tenant(f"t{i}", workload(f"t{i}", [kernel("a", 14, 10_000), kernel("b", 14, 10_000)]),
               "closed", quota=quota)
        for i, quota in enumerate(quotas)
    )  # fmt: skip
    sim = Simulation(
        tenants, make_policy("lithos", **params), spec=SPEC, duration_ns=1, compiled=False
    )
    return LoopRun(sim, sim.policy)


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
    hp_tpcs = int(policy_state(sim)["own_mask"][0])
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
    sim, result = simulate(policy, small_tenants, 8_000_000)
    assert result.extra["stolen_atoms"] > 0
    for i in range(3):
        spans = sorted(
            (launch, done)
            for a, (stream, launch, done, *_) in enumerate(sim.atom_log())
            if stream == i and sim.atom_stolen[a] and done > 0
        )
        # A new stolen atom is launched only once the last one is back.
        assert all(b[0] >= a[1] for a, b in pairwise(spans))


def test_atoms_of_a_long_kernel_last_250_to_500_us():
    grid = 28 * 40  # 40 waves of 50 us on 14 TPCs
    t = Tenant("t", workload("t", [kernel("k", grid, 50_000)]), "closed", quota=1.0)
    sim, _ = simulate("lithos", (t,), 6_000_000)
    own = [row for a, row in enumerate(sim.atom_log()) if not sim.atom_stolen[a]]
    durations = [done - launch for _, launch, done, *_ in own if done >= 0]
    # A 2 ms kernel becomes four 500 us atoms (the second one of each pair waits
    # for the first, so its span counts from its launch with the first).
    assert all(end - begin <= grid // 4 for _, _, _, begin, end, *_ in own)
    assert len(durations) >= 8
    assert max(durations) <= 2 * 500_000 and min(durations) >= 250_000


def test_atoms_are_cut_evenly_and_never_split_a_block():
    p = lithos_run().pol  # atoms of at most 500 us
    assert atom_blocks(p, 100, 10, 2, 10_000) == 100  # 50 us in all: one atom
    assert atom_blocks(p, 20 * 20, 10, 2, 100_000) == 5 * 20  # 2 ms -> four atoms of 500 us
    assert atom_blocks(p, 20, 10, 2, 900_000) == 20  # one 900 us wave: cannot split


@given(
    waves=st.integers(1, 200),
    last_wave_blocks=st.integers(1, 28),
    n_tpcs=st.integers(1, 14),
    blocks_per_tpc=st.integers(1, 2),
    wave_ns=st.integers(1, 3_000_000),
    max_ns=st.integers(1_000, 2_000_000),
)
def test_a_kernel_is_cut_into_even_atoms_no_longer_than_the_bound(
    waves, last_wave_blocks, n_tpcs, blocks_per_tpc, wave_ns, max_ns
):
    p = lithos_run(atom_max_ns=max_ns).pol
    wave_blocks = n_tpcs * blocks_per_tpc
    grid = (waves - 1) * wave_blocks + min(last_wave_blocks, wave_blocks)
    atoms, remaining = [], grid
    while remaining:  # each atom sized as the kernel's next, from what is left
        blocks = atom_blocks(p, remaining, n_tpcs, blocks_per_tpc, wave_ns)
        assert 0 < blocks <= remaining
        atoms.append(blocks)
        remaining -= blocks
    assert all(blocks % wave_blocks == 0 for blocks in atoms[:-1])  # whole waves
    atom_waves = [math.ceil(blocks / wave_blocks) for blocks in atoms]
    if waves * wave_ns <= max_ns:
        assert atoms == [grid]  # a short kernel stays whole
        return
    fit = max(1, max_ns // wave_ns)  # the waves an atom may hold (at least one)
    assert len(atoms) == math.ceil(waves / fit)  # the fewest atoms within the bound ...
    assert max(atom_waves) - min(atom_waves) <= 1  # ... as even as whole waves allow
    assert all(w * wave_ns <= max_ns or w == 1 for w in atom_waves)
    assert atom_waves[0] * wave_ns > max_ns / 2  # 250-500 us for the defaults


def test_right_sizing_on_isolated_block_times_keeps_the_waves_within_the_slip():
    grid, bpt = 1000, 2
    for slip in (1.0, 1.05, 1.1, 1.2, 1.5):
        p = lithos_run(rightsizing=True, slip=slip).pol
        for t_all in (54, 40, 17, 3):
            t = choose(p, 0, 0, grid, bpt, t_all)
            waves, waves_all = (math.ceil(grid / (n * bpt)) for n in (t, t_all))
            assert t <= t_all and waves <= slip * waves_all  # within the slip ...
            if t > 1:  # ... on the fewest TPCs that are
                assert math.ceil(grid / ((t - 1) * bpt)) > slip * waves_all + 1e-9
    # A grid of one wave keeps to the TPCs it occupies whatever the slip.
    assert choose(lithos_run(rightsizing=True, slip=1.5).pol, 0, 0, 10, 2, 54) == 5


@settings(deadline=None, max_examples=200)
@given(grid=st.integers(1, 5000), bpt=st.integers(1, 8), t_all=st.integers(1, 64),
       slip=st.floats(1.0, 2.0))  # fmt: skip
def test_right_sizing_never_breaks_the_slip_in_waves(grid, bpt, t_all, slip):
    p = _SIZED.pol
    state(p)["slip"] = slip
    t = choose(p, 0, 0, grid, bpt, t_all)
    assert 1 <= t <= t_all
    assert math.ceil(grid / (t * bpt)) <= slip * math.ceil(grid / (t_all * bpt)) + 1e-9


_SIZED = lithos_run(rightsizing=True)  # its slip set by each example


def test_right_sizing_fits_l_of_t_and_keeps_within_the_slip():
    p = lithos_run(rightsizing=True, slip=1.1, estimate="observed").pol
    grid, bpt = 1000, 2
    assert choose(p, 0, 0, grid, bpt, 54) == 50  # 10 waves: no TPC the grid cannot use
    m, b = 2_000_000.0, 50_000.0
    sizer_observe(p, 0, 0, 50, m / 50 + b)
    assert choose(p, 0, 0, grid, bpt, 54) == knee(grid, bpt, 11) == 46  # probe the next knee
    for t in (46, 42, 40):
        sizer_observe(p, 0, 0, t, m / t + b)
    t = choose(p, 0, 0, grid, bpt, 54)
    # The smallest knee with l(t) = m/t + b within the slip, and no fewer
    # than half the fewest TPCs seen (20).
    knees = {knee(grid, bpt, w) for w in range(1, grid + 1)}
    assert t == min(k for k in knees if k >= 20 and m / k + b <= 1.1 * (m / 50 + b)) == 42
    decided = state_values(p, STATE)
    assert decided["decisions"] == 3 and decided["given"] == 50 + 46 + t
    assert decided["available"] == 3 * 54


def test_right_sizing_goes_no_lower_than_half_the_fewest_tpcs_seen():
    p = lithos_run(rightsizing=True, estimate="observed").pol
    grid, bpt = 1000, 2
    for t in (50, 46):  # no faster on more TPCs: m = 0
        sizer_observe(p, 0, 0, t, 100_000)
    assert kernel_of(p, 0, 0)["t_min"] == 46
    # Half of 46 TPCs is 23, a knee: 1000 blocks, 2 per TPC, in 22 waves.
    assert choose(p, 0, 0, grid, bpt, 54) == knee(grid, bpt, 22) == 23


def test_right_sizing_without_the_fit_trims_a_grid_to_the_tpcs_it_occupies():
    p = lithos_run(rightsizing=True, rightsizing_fit=False).pol
    assert choose(p, 0, 0, 10, 2, 54) == 5
    sizer_observe(p, 0, 0, 5, 100_000)  # no fit, so no probe either
    assert choose(p, 0, 0, 200, 2, 54) == 50  # two waves on 54 TPCs, two on 50


def test_right_sizing_in_the_simulator_saves_tpc_time_within_the_slip():
    kernels = [kernel("small", 10, 20_000), kernel("big", 300, 30_000, mem=0.8)]
    t = Tenant("t", workload("t", kernels), "closed", quota=1.0)
    runs = {}
    for slip in (None, 1.1, 1.3):
        params = {} if slip is None else {"rightsizing": True, "slip": slip}
        _, result = simulate(make_policy("lithos", **params), (t,), 20_000_000, warmup_ns=5_000_000)
        s = result.streams[0]
        runs[slip] = (s.alloc_tpc_s / s.completed, max(s.latencies_ns))
    # TPC time saved, more at a larger slip, and the latency within it.
    assert runs[1.3][0] < runs[1.1][0] < runs[None][0]
    for slip in (1.1, 1.3):
        assert runs[slip][1] <= slip * runs[None][1]


def test_dvfs_sets_the_clock_from_the_runtime_weighted_sensitivity():
    run = lithos_run(dvfs=True, slip=1.1, estimate="observed")
    d, p = run.dev, run.pol
    f_max, f_min, step = SPEC.max_clock_mhz, SPEC.min_clock_mhz, SPEC.clock_step_mhz
    compute, memory = (0, 0), (0, 1)  # two kernels of tenant 0: (stream, position)
    governor_observe(d, p, *compute, 100_000, f_max)
    governor_observe(d, p, *memory, 300_000, f_max)
    # Seen only at f_max: counted as fully sensitive, so f = f_max / 1.1.
    assert target_mhz(d, p) == f_min + math.ceil((f_max / 1.1 - f_min) / step) * step
    f = 1110
    governor_observe(d, p, *compute, round(100_000 * f_max / f), f)  # s = 1
    governor_observe(d, p, *memory, 300_000, f)  # s = 0
    target_mhz(d, p)  # a decision: the window starts afresh
    assert kernel_of(p, *compute)["sensitivity"] == pytest.approx(1.0, abs=1e-3)
    assert kernel_of(p, *memory)["sensitivity"] == pytest.approx(0.0, abs=1e-3)
    governor_observe(d, p, *compute, 100_000, f_max)
    governor_observe(d, p, *memory, 300_000, f_max)
    sensitivity = 0.25  # 100 us at s = 1 and 300 us at s = 0
    expect = f_max / (1 + 0.1 / sensitivity)
    target = target_mhz(d, p)
    assert target - step < expect <= target  # rounded up: never below the slip's clock
    assert state_values(p, STATE)["last_sensitivity"] == pytest.approx(sensitivity, abs=1e-3)


def test_dvfs_on_isolated_block_times_follows_the_most_sensitive_high_priority_tenant():
    run = lithos_run(dvfs=True, slip=1.1)
    d, p = run.dev, run.pol
    f_max, step = SPEC.max_clock_mhz, SPEC.clock_step_mhz
    st_ = state(p)
    assert target_mhz(d, p) == f_max  # no tenant has started a kernel
    st_["iso_ns"][0], st_["compute_ns"][0] = 100.0, 50.0  # S = 0.5
    assert target_mhz(d, p) == f_max  # tenant 1 has not
    st_["iso_ns"][1], st_["compute_ns"][1] = 100.0, 80.0  # S = 0.8
    target = target_mhz(d, p)
    assert target - step < f_max / (1 + 0.1 / 0.8) <= target
    d.st[ST_HP, 1] = 0  # a best-effort tenant's work does not set the clock
    target = target_mhz(d, p)
    assert target - step < f_max / (1 + 0.1 / 0.5) <= target


def test_dvfs_returns_to_f_max_for_unseen_kernels_and_is_rate_limited():
    run = lithos_run(dvfs=True, dvfs_min_interval_ns=100, estimate="observed")
    d, p = run.dev, run.pol
    f_max = SPEC.max_clock_mhz
    governor_observe(d, p, 0, 0, 1000, 900)  # never seen at f_max
    assert target_mhz(d, p) == f_max
    governor_observe(d, p, 0, 1, 1000, f_max)
    assert 0 < decide(d, p, 0, f_max) < f_max  # seen at f_max only: s = 1
    governor_observe(d, p, 0, 1, 1000, f_max)
    assert decide(d, p, 50, f_max) == -1  # too soon after the last change
    assert state_values(p, STATE)["changes"] == 1


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
            assert result.extra["final_clock_mhz"] < SPEC.max_clock_mhz
            changes = [t for t, _ in result.clocks]
            assert all(b - a >= 10_000_000 for a, b in pairwise(changes))
    assert energy[True] < 0.95 * energy[False]


def test_predictor_learns_a_wave_time_and_counts_errors_over_50_us_as_mispredictions():
    run = lithos_run()
    p = run.pol
    learned = kernel_of(p, 0, 1)  # a kernel is keyed by stream and position
    observe(p, 0, 1, 2, 200_000, -1)  # first sight: no prediction to judge
    assert learned["wave_ns"] == 100_000
    assert math.isnan(kernel_of(p, 0, 0)["wave_ns"]) and math.isnan(kernel_of(p, 1, 1)["wave_ns"])
    predicted = round(3 * learned["wave_ns"])  # an atom of three waves
    observe(p, 0, 1, 3, 340_000, predicted)  # off by 40 us
    # An exponentially weighted average of the atoms' wave times (weight 1/2).
    assert learned["wave_ns"] == pytest.approx(100_000 + 0.5 * (340_000 / 3 - 100_000))
    observe(p, 0, 1, 1, 200_000, round(learned["wave_ns"]))  # off by ~93 us
    report = run.sim.policy.compiled_report(p)
    assert report["predictions"] == 2 and report["misprediction_rate"] == 0.5


def test_tpc_quotas_are_contiguous_and_stealing_needs_idle_tpcs():
    tpcs = TpcScheduler(14, [0.5, 0.5], max_stolen=1)
    assert tpcs.own_mask == [0x7F, 0x7F << 7]
    assert tpcs.owner.tolist() == [0] * 7 + [1] * 7
    run = lithos_run((0.5, 0.5), max_stolen=1)
    d, p = run.dev, run.pol
    assert state_values(p, STATE)["own_mask"][:2].tolist() == tpcs.own_mask
    assert stealable(d, p, 1, 0) == 0x7F and stealable(d, p, 0, 0) == 0x7F << 7
    claim(p, 0b11, 1_000)
    claim(p, 0b1, 500)  # a TPC stays busy until its latest claim
    assert stealable(d, p, 1, 500) == 0x7C and stealable(d, p, 1, 1_000) == 0x7F
    state_values(p, STATE)["stolen_out"][1] = 1  # max_stolen atoms outstanding
    assert stealable(d, p, 1, 2_000) == 0


def test_largest_remainder_gives_each_positive_share_at_least_one():
    assert largest_remainder([0.611, 0.259, 0.13], 7) == [4, 2, 1]
    assert largest_remainder([4 / 7, 2 / 7, 1 / 7], 54) == [31, 15, 8]
    assert largest_remainder([0.0, 0.0], 10) == [5, 5]
    assert sum(largest_remainder([0.3, 0.3], 54)) == 32


def test_a_tenant_without_quota_runs_on_stolen_tpcs_only():
    owner = Tenant("owner", workload("o", [kernel("o", 14, 100_000)]), "open",
                   (0, 2_000_000), quota=1.0)  # fmt: skip
    borrower = Tenant("borrower", workload("b", [kernel("b", 4, 50_000)]), "be", quota=0.0)
    sim, result = simulate("lithos", (owner, borrower), 4_000_000, record_blocks=True)
    assert result.extra["quota_tpcs"][1] == 0
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

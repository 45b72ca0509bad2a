"""Defining behaviours of mps, mps-limit, priority, mig and timeslice."""

from __future__ import annotations

from drivers.vgpu.policies import make_policy
from drivers.vgpu.policies.mig import MIG_SLICES
from drivers.vgpu.sharing import Simulation, Tenant
from drivers.vgpu.sharing.sim import HOST_LAUNCH_NS
from tests.policies.conftest import SPEC, blocks_of, kernel, policy_state, simulate, workload

FILL = 2 * SPEC.n_tpcs  # blocks of two per TPC that fill the device


def test_priority_never_evicts_a_resident_best_effort_block():
    # The best-effort host enqueues its kernels ahead, so one is always pending.
    be = Tenant("be", workload("be", [kernel("be", FILL, 100_000)]), "be", run_ahead=8)
    hp = Tenant("hp", workload("hp", [kernel("hp", FILL, 10_000)]), "open", (50_000,))
    sim, _ = simulate("priority", (hp, be), 400_000, record_blocks=True)
    be_blocks, hp_blocks = blocks_of(sim, 1), blocks_of(sim, 0)
    # Every best-effort block runs its whole duration; none is cut short for HP.
    assert all(b.end_ns - b.start_ns == 100_000 for b in be_blocks)
    # HP waits for the resident blocks (BE's first kernel reached the GPU one
    # host launch in), then goes before the pending BE kernel.
    first_be_done = HOST_LAUNCH_NS + 100_000
    assert min(b.start_ns for b in hp_blocks) == first_be_done
    hp_end = max(b.end_ns for b in hp_blocks)
    assert not [b for b in be_blocks if first_be_done <= b.start_ns < hp_end]


def test_mig_keeps_every_tenant_on_its_own_partition(small_tenants):
    sim, result = simulate("mig", small_tenants, 6_000_000, record_blocks=True)
    masks = [int(m) for m in policy_state(sim)["masks"][:3]]
    layout = result.extra["slices"]
    assert layout == [3, 2, 2] or sum(layout) <= MIG_SLICES
    assert all(a & b == 0 for i, a in enumerate(masks) for b in masks[i + 1 :])
    for i in range(3):
        blocks = blocks_of(sim, i)
        assert blocks, "every tenant ran"
        assert all(masks[i] >> b.tpc & 1 for b in blocks)
    assert all(r.completed > 0 for r in result.streams[1:])


def two_busy_tenants():
    job = Tenant("job", workload("job", [kernel("k", 8, 50_000)]), "closed")
    be = Tenant("be", workload("be", [kernel("k", 8, 50_000)]), "be")
    return job, be


def assert_down_then_partitioned(sim, at_ns: int, down_ns: int) -> None:
    """Launches stopped at `at_ns`, the device drained and stayed idle for
    `down_ns`, then every block ran on its tenant's instance (MIG's masks
    at the end of the run)."""
    masks = [int(m) for m in policy_state(sim)["masks"]]
    log = sim.gpu.block_log()
    drained = max(b.end_ns for b in log if b.start_ns <= at_ns)
    assert not [b for b in log if drained < b.start_ns < drained + down_ns]
    after = [b for b in log if b.start_ns >= drained + down_ns]
    assert after and all(masks[sim.atom_log()[b.atom_id][0]] >> b.tpc & 1 for b in after)


def test_mig_reconfiguration_drains_then_is_down_before_the_new_layout():
    sim = Simulation(two_busy_tenants(), make_policy("mig", reconfigure_ns=1_000_000), spec=SPEC,
                     duration_ns=5_000_000, record_blocks=True)  # fmt: skip
    # MIG with other slices takes over from MIG, as a `reload` of gpu_mig does.
    relayout = make_policy("mig", slices=(1, 6), reconfigure_ns=1_000_000)
    sim.call_at(1_000_000, sim.set_policy, relayout)
    result = sim.run()
    assert_down_then_partitioned(sim, 1_000_000, 1_000_000)
    assert result.extra["tpcs"][1] == 6 * (SPEC.n_tpcs // MIG_SLICES)
    assert result.extra["reconfigurations"] == 1


def test_mps_limit_caps_each_tenant_to_its_share_of_tpcs(small_tenants):
    sim, _ = simulate("mps-limit", small_tenants, 4_000_000, record_blocks=True)
    for i, tenant in enumerate(small_tenants):
        used = {b.tpc for b in blocks_of(sim, i)}
        assert len(used) <= round(tenant.quota * SPEC.n_tpcs)


def test_mps_serves_first_launched_first_so_whoever_launches_more_wins():
    # The best-effort host enqueues its kernels 5 us apart, far ahead of the GPU.
    be = Tenant("be", workload("be", [kernel("be", FILL, 100_000)]), "be", run_ahead=1024)
    hp = Tenant("hp", workload("hp", [kernel("hp", FILL, 10_000)]), "open", (1_002_000,))
    sim, _ = simulate("mps", (hp, be), 40_000_000, record_blocks=True)
    # BE kernels enqueued before HP's all go first: BE kernel g is enqueued at
    # (g + 1) * 5 us and HP's one host launch after its arrival, at 1.007 ms,
    # so kernels 0..200 precede it; they run back to back from the first launch.
    hp_enqueued = 1_002_000 + HOST_LAUNCH_NS
    ahead = hp_enqueued // HOST_LAUNCH_NS
    first_hp = min(b.start_ns for b in blocks_of(sim, 0))
    assert first_hp == HOST_LAUNCH_NS + ahead * 100_000
    # Under priority the same HP kernel goes at the first BE completion after it.
    sim, _ = simulate("priority", (hp, be), 3_000_000, record_blocks=True)
    assert min(b.start_ns for b in blocks_of(sim, 0)) == HOST_LAUNCH_NS + 1_100_000


def test_timeslice_gives_the_gpu_to_one_context_per_slice():
    long = [kernel("k", 6 * FILL, 50_000)]  # six waves of 50 us
    a = Tenant("a", workload("a", long), "closed")
    b = Tenant("b", workload("b", long), "closed")
    slice_ns = 200_000
    sim, result = simulate(
        make_policy("timeslice", slice_ns=slice_ns), (a, b), 2_000_000, record_blocks=True
    )
    for blk in sim.gpu.block_log():
        owner = (blk.start_ns // slice_ns) % 2
        assert sim.atom_log()[blk.atom_id][0] == owner, blk
    assert result.extra["switches"] >= 2_000_000 // slice_ns - 1
    assert all(r.completed > 0 for r in result.streams)


def test_timeslice_hands_over_at_once_when_the_owner_runs_dry():
    be = Tenant("be", workload("be", [kernel("k", FILL, 30_000)]), "be", run_ahead=8)
    hp = Tenant("hp", workload("hp", [kernel("k", 4, 20_000)]), "open", (10_000,))
    sim, _ = simulate(make_policy("timeslice", slice_ns=300_000), (be, hp), 1_000_000,
                      record_blocks=True)  # fmt: skip
    hp_blocks = blocks_of(sim, 1)
    # HP waits for BE's slice to end: it began when BE's first launch reached
    # the GPU, and BE's back-to-back waves of 30 us end with it ...
    slice_end = HOST_LAUNCH_NS + 300_000
    assert min(b.start_ns for b in hp_blocks) == slice_end
    hp_end = max(b.end_ns for b in hp_blocks)
    # ... and gives the GPU back as soon as its one request is done.
    assert min(b.start_ns for b in blocks_of(sim, 0) if b.start_ns >= slice_end) == hp_end


def test_switching_to_mig_while_running_costs_the_reconfiguration_downtime():
    sim = Simulation(two_busy_tenants(), make_policy("mps"), spec=SPEC, duration_ns=4_000_000,
                     record_blocks=True)  # fmt: skip
    mig = make_policy("mig", reconfigure_ns=1_000_000)
    sim.call_at(1_000_000, sim.set_policy, mig)
    result = sim.run()
    assert sim.policy is mig
    assert_down_then_partitioned(sim, 1_000_000, 1_000_000)
    assert result.extra["reconfigurations"] == 1

"""Behaviours of the vGPU timing model, on the engine and on the reference model alike."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.vgpu.api import Completion
from drivers.vgpu.engine import Engine
from drivers.vgpu.errors import InvalidArgument, UnknownContext, UnknownKernel
from drivers.vgpu.presets import a100, scaled
from drivers.vgpu.work import KernelDesc, mask_of


def small_spec(n_tpcs: int = 4, switch_latency_ns: int = 1_000):
    return scaled(a100, n_tpcs, switch_latency_ns)


def compute_kernel(grid: int, bpt: int = 1, duration_ns: int = 1000, **kw) -> KernelDesc:
    return KernelDesc("k", grid, bpt, duration_ns, **kw)


def run_to_idle(gpu) -> list[Completion]:
    events = []
    while batch := gpu.advance():
        events += batch
    return events


def test_a_kernel_runs_in_waves_of_its_resident_blocks(device_cls, small):
    gpu = device_cls(small)
    ctx = gpu.create_context()
    gpu.launch(ctx, compute_kernel(grid=4 * 2 * 3, bpt=2))
    assert gpu.advance() == [Completion(3000, 0, 0, ctx, True)]
    assert gpu.now_ns == 3000 and gpu.advance() == []


def test_running_blocks_are_never_preempted(device_cls, small):
    gpu = device_cls(small, record_blocks=True)
    ctx = gpu.create_context()
    low = gpu.launch(ctx, compute_kernel(grid=8, bpt=2), priority=0)
    assert gpu.advance(500) == [] and gpu.busy_tpcs == 4
    high = gpu.launch(ctx, compute_kernel(grid=8, bpt=2, duration_ns=100), priority=9)
    run_to_idle(gpu)
    log = gpu.block_log()
    assert all((r.start_ns, r.end_ns) == (0, 1000) for r in log if r.atom_id == low)
    assert all(r.start_ns == 1000 for r in log if r.atom_id == high)


def test_highest_priority_atom_dispatches_first(device_cls, small):
    gpu = device_cls(small, record_blocks=True)
    ctx = gpu.create_context()
    low = gpu.launch(ctx, compute_kernel(grid=8, bpt=2), priority=0)  # launched first
    high = gpu.launch(ctx, compute_kernel(grid=8, bpt=2, duration_ns=500), priority=1)
    events = run_to_idle(gpu)
    assert [(e.atom_id, e.time_ns) for e in events] == [(high, 500), (low, 1500)]


def test_mask_restricts_blocks_to_its_tpcs(device_cls, small):
    gpu = device_cls(small, record_blocks=True)
    ctx = gpu.create_context()
    gpu.launch(ctx, compute_kernel(grid=10), mask=0b0101)
    run_to_idle(gpu)
    assert {r.tpc for r in gpu.block_log()} == {0, 2}
    assert gpu.now_ns == 5000  # two TPCs, one block each at a time


def test_equal_priorities_take_turns_across_contexts(device_cls):
    gpu = device_cls(small_spec(n_tpcs=1), record_blocks=True)
    a, b = gpu.create_context(), gpu.create_context()
    atom_a = gpu.launch(a, compute_kernel(grid=3))
    atom_b = gpu.launch(b, compute_kernel(grid=3))
    run_to_idle(gpu)
    order = [r.atom_id for r in gpu.block_log()]
    assert order == [atom_a, atom_b] * 3


def test_launch_dispatch_order_serves_equal_priorities_first_come_first_served(device_cls):
    gpu = device_cls(small_spec(n_tpcs=1), record_blocks=True, dispatch_order="launch")
    a, b = gpu.create_context(), gpu.create_context()
    atom_a = gpu.launch(a, compute_kernel(grid=3))
    atom_b = gpu.launch(b, compute_kernel(grid=3))
    high = gpu.launch(b, compute_kernel(grid=1), priority=1)
    run_to_idle(gpu)
    assert [r.atom_id for r in gpu.block_log()] == [high] + [atom_a] * 3 + [atom_b] * 3


def test_atom_busy_time_sums_its_blocks_run_times(device_cls, small):
    gpu = device_cls(small, record_blocks=True)
    ctx = gpu.create_context()
    atom = gpu.launch(ctx, compute_kernel(grid=10, bpt=2, duration_ns=700))
    gpu.advance(1)
    assert gpu.atom_busy_ns(atom) == 8 * 700  # the first wave has started
    run_to_idle(gpu)
    assert gpu.atom_busy_ns(atom) == sum(r.end_ns - r.start_ns for r in gpu.block_log())
    assert gpu.atom_busy_ns(atom) == 10 * 700
    with pytest.raises(InvalidArgument):
        gpu.atom_busy_ns(atom + 1)


def test_launch_order_follows_the_given_host_enqueue_time(device_cls):
    gpu = device_cls(small_spec(n_tpcs=1), record_blocks=True, dispatch_order="launch")
    a, b = gpu.create_context(), gpu.create_context()
    late = gpu.launch(a, compute_kernel(grid=2), order=500)
    early = gpu.launch(b, compute_kernel(grid=2), order=100)
    run_to_idle(gpu)
    assert [r.atom_id for r in gpu.block_log()] == [early, early, late, late]
    with pytest.raises(InvalidArgument, match="must not decrease"):
        gpu.launch(a, compute_kernel(grid=1), order=400)


def test_unknown_dispatch_order_is_refused(device_cls):
    with pytest.raises(InvalidArgument, match="dispatch order"):
        device_cls(small_spec(), dispatch_order="random")


def test_a_context_runs_its_atoms_in_launch_order(device_cls):
    gpu = device_cls(small_spec(n_tpcs=1), record_blocks=True)
    ctx = gpu.create_context()
    first = gpu.launch(ctx, compute_kernel(grid=2))
    second = gpu.launch(ctx, compute_kernel(grid=2))
    run_to_idle(gpu)
    assert [r.atom_id for r in gpu.block_log()] == [first, first, second, second]


def test_blocks_of_different_kernels_share_a_tpc_by_exact_capacity(device_cls):
    gpu = device_cls(small_spec(n_tpcs=1), record_blocks=True)
    ctx = gpu.create_context()
    gpu.launch(ctx, compute_kernel(grid=1, bpt=2))  # half a TPC
    gpu.launch(ctx, compute_kernel(grid=2, bpt=4))  # two quarters
    gpu.launch(ctx, compute_kernel(grid=1, bpt=4))  # no room left
    gpu.advance(0)
    assert gpu.tpc_occupancy() == [1.0] and gpu.running_blocks == 3
    run_to_idle(gpu)
    assert [r.start_ns for r in gpu.block_log()] == [0, 0, 0, 1000]


def test_frequency_change_applies_after_switch_latency(device_cls):
    gpu = device_cls(small_spec(n_tpcs=1, switch_latency_ns=1000), record_blocks=True)
    ctx = gpu.create_context()
    gpu.launch(ctx, compute_kernel(grid=5, duration_ns=300))
    assert gpu.set_clock(705) == 1000
    assert gpu.stats().pending_clocks == ((1000, 705),)
    gpu.advance(999)
    assert gpu.clock_mhz == 1410
    gpu.advance(1000)
    assert gpu.clock_mhz == 705 and gpu.stats().pending_clocks == ()
    run_to_idle(gpu)
    spans = [(r.start_ns, r.end_ns) for r in gpu.block_log()]
    # Blocks started before the switch keep their duration; later ones take f_max / f longer.
    assert spans == [(0, 300), (300, 600), (600, 900), (900, 1200), (1200, 1800)]


def test_memory_contention_slows_the_memory_bound_part(device_cls, small):
    streaming = KernelDesc("stream", 4, 1, 1000, mem_fraction=1.0)
    alone = device_cls(small, record_blocks=True)
    alone.launch(alone.create_context(), streaming, mask=0b0001)
    run_to_idle(alone)
    shared = device_cls(small, record_blocks=True)
    ctx = shared.create_context()
    shared.launch(ctx, streaming, mask=0b0001)
    shared.launch(ctx, KernelDesc("other", 3, 1, 1000, mem_fraction=1.0), mask=0b1110)
    run_to_idle(shared)
    # Alone on one TPC of four, the kernel streams unhindered (a quarter of the
    # device saturates DRAM); beside three more streaming TPCs it gets a quarter.
    assert alone.now_ns == 4 * 250
    first = shared.block_log()[0]
    assert first.end_ns - first.start_ns == 1000


def test_advance_stops_at_a_completion_before_the_freed_tpcs_are_refilled(device_cls, small):
    gpu = device_cls(small, record_blocks=True)
    ctx = gpu.create_context()
    gpu.launch(ctx, compute_kernel(grid=4, duration_ns=100))
    background = gpu.launch(ctx, compute_kernel(grid=40), priority=0)
    events = gpu.advance()
    assert [e.atom_id for e in events] == [0] and gpu.now_ns == 100
    urgent = gpu.launch(ctx, compute_kernel(grid=4, duration_ns=50), priority=5)
    gpu.advance(gpu.now_ns)
    log = gpu.block_log()
    assert {r.atom_id for r in log if r.start_ns == 100} == {urgent}
    assert background not in {r.atom_id for r in log}


def test_kernel_completion_comes_with_its_last_atom(device_cls, small):
    gpu = device_cls(small)
    ctx = gpu.create_context()
    kernel = gpu.add_kernel(compute_kernel(grid=8))
    gpu.launch(ctx, kernel, 0, 4)
    gpu.launch(ctx, kernel, 4, 8)
    events = run_to_idle(gpu)
    assert [(e.atom_id, e.kernel_done) for e in events] == [(0, False), (1, True)]
    assert gpu.kernel_done_ns(kernel) == events[-1].time_ns == 2000


def test_idle_power_is_integrated_over_idle_time(device_cls, small):
    gpu = device_cls(small)
    gpu.advance(2_000_000)
    assert gpu.energy_j == pytest.approx(small.idle_power_w * 2e-3, rel=1e-12)


def test_energy_integrates_each_constant_power_piece(device_cls, small):
    gpu = device_cls(small)
    ctx = gpu.create_context()
    gpu.launch(ctx, compute_kernel(grid=2, duration_ns=1000), mask=0b0011)
    gpu.launch(ctx, compute_kernel(grid=1, duration_ns=3000), mask=0b0100)
    run_to_idle(gpu)
    dyn = small.dynamic_power_per_tpc_w(1410)
    expected = (small.idle_power_w + 3 * dyn) * 1e-6 + (small.idle_power_w + dyn) * 2e-6
    assert gpu.energy_j == pytest.approx(expected, rel=1e-12)


def test_stats_expose_power_clock_energy_and_occupancy(device_cls, small):
    gpu = device_cls(small)
    ctx = gpu.create_context(quota_bytes=1 << 20)
    gpu.memory.alloc(ctx, 4096)
    gpu.launch(ctx, compute_kernel(grid=3, bpt=2), mask=0b0011)
    gpu.advance(10)
    s = gpu.stats()
    assert s.busy_tpcs == 2 and s.running_blocks == 3 and s.clock_mhz == 1410
    assert s.tpc_occupancy == (1.0, 0.5, 0.0, 0.0)
    assert s.power_w == pytest.approx(small.idle_power_w + 2 * small.dynamic_power_per_tpc_w(1410))
    assert s.energy_j == pytest.approx(s.power_w * 10e-9)
    assert (s.blocks_dispatched, s.atoms_launched, s.memory_used_bytes) == (3, 1, 4096)


def test_many_atoms_grow_the_engine_tables():
    gpu = Engine(small_spec(), atom_capacity=2)
    ctxs = [gpu.create_context() for _ in range(40)]
    for i in range(3000):
        gpu.launch(ctxs[i % 40], compute_kernel(grid=2, duration_ns=10), priority=i % 3)
    for _ in range(20):
        gpu.set_clock(1395)
    events = gpu.run_batch()
    assert len(events) == 3000 and gpu.stats().blocks_completed == 6000


def test_the_block_log_is_off_unless_asked_for(device_cls, small):
    with pytest.raises(InvalidArgument, match="record_blocks=True"):
        device_cls(small).block_log()


def test_a_context_with_unfinished_atoms_cannot_be_destroyed(device_cls, small):
    gpu = device_cls(small)
    ctx = gpu.create_context()
    gpu.launch(ctx, compute_kernel(grid=1))
    with pytest.raises(InvalidArgument, match="unfinished atoms"):
        gpu.destroy_context(ctx)
    run_to_idle(gpu)
    gpu.destroy_context(ctx)
    with pytest.raises(UnknownContext):
        gpu.launch(ctx, compute_kernel(grid=1))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda g, c, k: g.launch(c + 7, k), UnknownContext, "no GPU context 7"),
        (lambda g, c, k: g.launch(c, 99), UnknownKernel, "no kernel 99"),
        (lambda g, c, k: g.launch(c, k, mask=0), InvalidArgument, "names no TPC"),
        (lambda g, c, k: g.launch(c, k, mask=1 << 4), InvalidArgument, "names TPC 4"),
        (lambda g, c, k: g.launch(c, k, 2, 2), InvalidArgument, "non-empty"),
        (lambda g, c, k: g.launch(c, k, 0, 9), InvalidArgument, r"within \[0, 8\)"),
        (lambda g, c, k: g.launch(c, k, 3, 5), InvalidArgument, "overlaps"),
        (lambda g, c, k: g.launch(c, k, priority=2**31), InvalidArgument, "priority"),
        (lambda g, c, k: g.set_clock(2000), InvalidArgument, "outside"),
        (lambda g, c, k: g.set_clock(1000), InvalidArgument, "grid"),
        (lambda g, c, k: g.advance(-1), InvalidArgument, "already"),
    ],
)
def test_bad_requests_raise_clear_errors_and_change_nothing(
    device_cls, small, call, error, message
):
    gpu = device_cls(small, record_blocks=True)
    ctx = gpu.create_context()
    kernel = gpu.add_kernel(compute_kernel(grid=8))
    gpu.launch(ctx, kernel, 0, 4)
    gpu.advance(10)
    before = (gpu.stats(), gpu.block_log())
    with pytest.raises(error, match=message):
        call(gpu, ctx, kernel)
    assert (gpu.stats(), gpu.block_log()) == before
    run_to_idle(gpu)
    assert gpu.stats().blocks_completed == 4


operations = st.lists(
    st.tuples(
        st.sampled_from(["launch", "clock", "advance"]),
        st.integers(-3, 20),  # a size, a context or a time step: sometimes invalid
        st.integers(-1, 1 << 5),  # a mask: sometimes empty or beyond the device
        st.integers(-3, 3),
    ),
    max_size=25,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations)
def test_invalid_operations_leave_the_device_as_it_was(device_cls, ops):
    gpu = device_cls(small_spec(), record_blocks=True)
    ctx = gpu.create_context()
    for op, n, mask, extra in ops:
        before = (gpu.stats(), gpu.block_log())
        try:
            if op == "launch":
                kernel = KernelDesc("k", max(1, n), 1 + abs(extra), 100 + n)
                gpu.launch(ctx + (extra == -3), kernel, 0, n, mask)
            elif op == "clock":
                gpu.set_clock(1410 - 15 * n + extra)
            else:
                gpu.advance(gpu.now_ns + 50 * n)
        except (InvalidArgument, UnknownContext):
            assert (gpu.stats(), gpu.block_log()) == before
    run_to_idle(gpu)
    log = gpu.block_log()
    assert gpu.running_blocks == 0 and len(log) == gpu.stats().blocks_completed


@given(st.integers(1, 300), st.lists(st.integers(1, 50), min_size=1, max_size=12), st.data())
@settings(max_examples=30, deadline=None)
def test_every_block_runs_exactly_once_whatever_the_atom_sizes(grid, cuts, data):
    gpu = Engine(small_spec(), record_blocks=True)
    ctxs = [gpu.create_context() for _ in range(3)]
    kernel = gpu.add_kernel(compute_kernel(grid=grid, bpt=3, duration_ns=77))
    begin = 0
    for cut in cuts + [grid]:
        end = min(grid, begin + cut)
        if begin < end:
            mask = data.draw(st.integers(1, 15))
            gpu.launch(data.draw(st.sampled_from(ctxs)), kernel, begin, end, mask)
        begin = end
    events = run_to_idle(gpu)
    assert sorted(r.block for r in gpu.block_log()) == list(range(grid))
    assert events[-1].kernel_done and sum(e.kernel_done for e in events) == 1


def test_a100_preset_drives_the_engine(device_cls):
    gpu = device_cls(a100)
    ctx = gpu.create_context()
    gpu.launch(ctx, compute_kernel(grid=108 * 2, bpt=2), mask=mask_of(range(54)))
    assert gpu.advance() == [Completion(2000, 0, 0, ctx, True)]

"""Contexts' shares in the driver's stream scheduler, a VM's back end's lifetime, and
how long one guest's kernel waits beside the other guest's long kernel."""

from __future__ import annotations

import pytest

from drivers.vgpu.engine import Engine
from drivers.vgpu.scheduler import StreamScheduler
from drivers.vgpu.server import LaunchSpec
from drivers.vgpu.work import KernelDesc
from tests.hypervisor_gpu.gpu_guests import (
    SMALL,
    gpu_work,
    hv_host,
    late_kernel,
    run_until,
    spawn_gpu,
)


def _scheduler_with(streams: list[tuple[int, int]]) -> StreamScheduler:
    engine = Engine("a100", dispatch_order="launch")
    sched = StreamScheduler(engine, lambda ctx: None)
    spec = LaunchSpec("k", grid_blocks=1, block_us=1.0)
    desc = KernelDesc(name="k", grid_blocks=1, blocks_per_tpc=2, block_duration_ns=1000)
    for ctx, stream in streams:
        if ctx not in engine.contexts:
            engine.create_context(None, ctx)
        sched.submit(ctx, stream, engine.add_kernel(desc), desc, spec)
    return sched


def test_streams_share_equally_when_no_context_has_a_share():
    sched = _scheduler_with([(0, 0), (1, 0), (1, 1)])
    assert [s.quota for s in sched.streams] == pytest.approx([1 / 3] * 3)


def test_a_contexts_streams_split_its_share_and_the_rest_goes_to_the_others():
    sched = _scheduler_with([(0, 0), (1, 0), (1, 1), (2, 0)])
    sched.set_share(1, 0.6)
    assert [s.quota for s in sched.streams] == pytest.approx([0.2, 0.3, 0.3, 0.2])
    sched.set_share(1, None)
    assert [s.quota for s in sched.streams] == pytest.approx([0.25] * 4)


def test_removing_the_last_context_with_a_share_leaves_no_streams():
    sched = _scheduler_with([(0, 0)])
    sched.set_share(0, 0.5)
    sched.catch_up(10**9)  # its kernel done: the context is idle
    sched.remove_context(0)
    assert sched.streams == [] and sched.shares == {}


def test_destroying_a_vm_ends_its_back_end_and_the_host_reclaims_its_context(host):
    vm = host.hv.create("vm1", gpu_share=50).start()
    done: list[dict] = []
    spawn_gpu(vm, gpu_work(done, kernels=2))
    run_until(host.machine, lambda: bool(done))
    names = {t.name for t in host.tasks.values()}
    assert "vgpu-backend:vm1" in names and "vgpu-sync:vm1:0" in names
    host.hv.destroy("vm1")
    host.machine.run(until=host.machine.now_ns + 20_000_000)
    assert not any("vm1" in t.name for t in host.tasks.values())
    assert "vm1" not in host.shell("gpu")


def long_and_short(block_us: int) -> tuple[LaunchSpec, LaunchSpec]:
    """The 40% guest's kernel, 4,320 blocks (40 waves of the whole a100), and
    the 60% guest's, one wave of the a100: blocks of `block_us` both."""
    return (
        LaunchSpec("long", grid_blocks=4_320, block_us=float(block_us)),
        LaunchSpec("short", grid_blocks=108, block_us=float(block_us)),
    )


#: The 60% guest's kernel's latency at most, in blocks of the 40% guest's:
#: under time slicing, its turn within the other's 400 us slice, its first
#: block within one block of that, and its one wave on the whole device;
#: under LithOS, its first block within one block on its own 32 TPCs, and
#: its two waves there.
BOUNDS = {
    "gpu_timeslice": lambda block_ns: 400_000 + 2 * block_ns,
    "gpu_lithos": lambda block_ns: 3 * block_ns,
}


@pytest.mark.parametrize("after_blocks", [0.7, 5.5])
@pytest.mark.parametrize("block_us", [100, 600, 2_000, 5_000])
@pytest.mark.parametrize("advisor", BOUNDS)
def test_a_guests_kernel_waits_at_most_one_block_of_the_other_guests_long_kernel(
    advisor: str, block_us: int, after_blocks: float
):
    host = hv_host(advisor)
    try:
        vm1 = host.hv.create("vm1", gpu_share=60).start()
        vm2 = host.hv.create("vm2", gpu_share=40).start()
        long, short = long_and_short(block_us)
        long_done: list[dict] = []
        latencies: list[int] = []
        spawn_gpu(vm2, gpu_work(long_done, kernels=1, spec=long))
        spawn_gpu(vm1, late_kernel(latencies, short, after_us=round(after_blocks * block_us)))
        run_until(host.machine, lambda: bool(latencies))
        assert not long_done  # the long kernel still runs
        # 50 us for the launch and the answer through the guests' queues.
        assert latencies[0] <= BOUNDS[advisor](block_us * 1000) + 50_000
    finally:
        host.hv.shutdown()
        host.machine.shutdown()


def test_under_lithos_a_guests_stolen_blocks_wait_for_one_atom_not_the_other_guests_kernel():
    # Both guests start at once: the 60% guest's kernel (216 blocks of
    # 200 us) comes first and runs on its own TPCs and, stolen, on the 40%
    # guest's, still idle; then the 40% guest's long kernel comes.  Its
    # first atom (one 2 ms wave) goes before the stolen blocks not yet
    # started, and those go before the rest of its kernel.
    host = hv_host("gpu_lithos")
    try:
        vm1 = host.hv.create("vm1", gpu_share=60).start()
        vm2 = host.hv.create("vm2", gpu_share=40).start()
        small: list[dict] = []
        long_done: list[dict] = []
        spawn_gpu(vm1, gpu_work(small, kernels=1, spec=SMALL))
        spawn_gpu(vm2, gpu_work(long_done, kernels=1, spec=long_and_short(2_000)[0]))
        run_until(host.machine, lambda: bool(small))
        assert not long_done
        # Alone it takes two waves (400 us); then one atom of the other's, and
        # 50 us for the guests' queues.
        assert small[0]["done"] - small[0]["start"] <= 400_000 + 2_000_000 + 50_000
    finally:
        host.hv.shutdown()
        host.machine.shutdown()

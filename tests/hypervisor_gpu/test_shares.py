"""Contexts' shares in the driver's stream scheduler, and a VM's back end's lifetime."""

from __future__ import annotations

import pytest

from drivers.vgpu.engine import Engine
from drivers.vgpu.scheduler import StreamScheduler
from drivers.vgpu.server import LaunchSpec
from drivers.vgpu.work import KernelDesc
from tests.hypervisor_gpu.gpu_guests import gpu_work, run_until, spawn_gpu


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

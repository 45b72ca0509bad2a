"""The booted vGPU driver runs in bounded memory: it holds the work in flight, not its past.

A device created with ``keep_history=False`` (api.py, "Ids and memory")
forgets the atoms and kernels its owners release and reuses their ids.
First, that changes nothing a run does: the same workload, released as it
completes, dispatches block for block as on a device that keeps every id,
on the engine (both modes) and on the reference model.  Then the proof: the driver's
scheduler, and the booted driver through its API, run thousands of kernels,
and every table and per-atom or per-kernel container stays under a bound
that does not grow with the number of launches.  Sizes are counted, never
timed or read from the process's memory.
"""

from __future__ import annotations

import bisect
import functools
import math
import random

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.vgpu.api import DISPATCH_ORDERS, IDLE_COSTS_KEPT
from drivers.vgpu.engine import Engine
from drivers.vgpu.errors import InvalidArgument, UnknownKernel
from drivers.vgpu.inference import VgpuInferenceBackend
from drivers.vgpu.presets import a100, h100, scaled
from drivers.vgpu.reference import ReferenceEngine
from drivers.vgpu.scheduler import StreamScheduler
from drivers.vgpu.server import GpuDriver, InferencePort, LaunchGraph, LaunchSpec
from drivers.vgpu.sharing.compiled import D_NATOMS, D_NCLOCKS, D_NTIMERS
from drivers.vgpu.work import KernelDesc
from kernel import Kernel
from kernel.mlaas.inference import Model
from tests.test_gpu_driver import run_program
from tests.vgpu.test_engine_vs_reference import plan_atoms, random_kernel, random_mask
from userland.gpulib import open_context
from userland.lib import UsageError

# -- a device without history runs as one with it ------------------------------


def play(device_cls, seed: int, keep_history: bool):
    """Kernels launched in atoms over time, each completion released at once
    (and each finished kernel); everything observable, atoms by launch number."""
    rng = random.Random(seed)
    spec = scaled(rng.choice([a100, h100]), rng.choice([1, 2, 5, 8]), rng.choice([500, 20_000]))
    order = rng.choice(DISPATCH_ORDERS)
    gpu = device_cls(spec, record_blocks=True, dispatch_order=order, keep_history=keep_history)
    ctxs = [gpu.create_context() for _ in range(rng.randint(1, 4))]
    last_order = dict.fromkeys(ctxs, 0)
    holders: dict[int, list[tuple[int, int]]] = {}  # atom id -> (launch time, launch number)
    number: dict[int, int] = {}  # atom id -> launch number, while it is live
    launches = most_live = 0
    trace: list = []
    for _ in range(150):
        for _ in range(rng.choice([0, 1, 2, 4]) if len(number) < 30 else 0):
            kernel = random_kernel(rng)
            kernel_id = gpu.add_kernel(kernel)
            ctx, mask = rng.choice(ctxs), random_mask(rng, spec.n_tpcs)
            for begin, end in plan_atoms(rng, kernel):
                at = None
                if rng.random() < 0.5:  # enqueued by the host before it reaches the device
                    at = max(last_order[ctx], gpu.now_ns - rng.randint(0, 3000))
                last_order[ctx] = gpu.now_ns if at is None else at
                priority = rng.choice([None, rng.randint(0, 2)])
                atom = gpu.launch(ctx, kernel_id, begin, end, mask, priority, order=at)
                holders.setdefault(atom, []).append((gpu.now_ns, launches))
                number[atom] = launches
                launches += 1
        most_live = max(most_live, len(number))
        for _ in range(rng.randint(1, 4)):  # completions outpace launches: ids come back
            events = gpu.advance(rng.choice([None, gpu.now_ns + rng.randint(0, 5000)]))
            trace.append([(c.time_ns, number[c.atom_id], c.ctx, c.kernel_done) for c in events])
            trace.append(attrs.evolve(gpu.stats(), energy_j=0.0))
            gpu.release_atoms([c.atom_id for c in events])
            for c in events:
                del number[c.atom_id]
                if c.kernel_done:
                    gpu.release_kernel(c.kernel_id)

    def launch_number(atom: int, start_ns: int) -> int:
        # An id's holders come one after another: a block is its latest
        # holder's launched by then (the one before had completed).
        times = [t for t, _ in holders[atom]]
        return holders[atom][bisect.bisect_right(times, start_ns) - 1][1]

    blocks = [
        (launch_number(r.atom_id, r.start_ns), r.block, r.tpc, r.start_ns, r.end_ns)
        for r in gpu.block_log()
    ]
    return trace, blocks, gpu.energy_j, (len(holders), launches, most_live)


def assert_same_without_history(seed: int) -> tuple[int, int, int]:
    """Run `seed` on a device that keeps every id and on devices that reuse
    them (engine, reference model; and the engine's wave mode against its
    own); returns the atom ids used, the atoms launched and the most atoms
    live at once."""
    wave = functools.partial(Engine, mode="wave")
    for kept, reusing in ((Engine, (Engine, ReferenceEngine)), (wave, (wave,))):
        trace, blocks, energy, _ = play(kept, seed, keep_history=True)
        for device_cls in reusing:
            got, got_blocks, got_energy, counts = play(device_cls, seed, keep_history=False)
            assert got_blocks == blocks
            assert got == trace
            assert math.isclose(got_energy, energy, rel_tol=1e-9)
    return counts


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_a_device_that_reuses_ids_dispatches_block_for_block_as_one_that_does_not(seed):
    assert_same_without_history(seed)


def test_seeded_runs_reuse_ids_and_still_agree():
    # Launch order (the driver's): the ids are as many as the atoms live at once.
    ids, launches, most_live = assert_same_without_history(0)
    assert launches > 300 and ids == most_live
    # Round robin: a context's atoms queued on other masks hold ids back
    # (the new atom must compare after them), yet ids come back.
    ids, launches, _ = assert_same_without_history(6)
    assert ids < launches / 2


def test_released_atoms_and_kernels_are_refused_and_their_ids_reused_lowest_first(
    device_cls, small
):
    gpu = device_cls(small, keep_history=False)
    ctx = gpu.create_context()
    desc = KernelDesc(name="k", grid_blocks=4, blocks_per_tpc=1, block_duration_ns=100)
    kernels = [gpu.add_kernel(desc) for _ in range(3)]
    atoms = [gpu.launch(ctx, k) for k in kernels]
    assert atoms == kernels == [0, 1, 2]
    with pytest.raises(InvalidArgument, match="still in flight"):
        gpu.release_atoms([atoms[0]])
    with pytest.raises(InvalidArgument, match="atoms in flight"):
        gpu.release_kernel(kernels[0])
    events = gpu.advance() + gpu.advance() + gpu.advance()  # one after another, 100 ns each
    assert [c.atom_id for c in events] == atoms
    assert gpu.atom_done_ns(atoms[1]) == 200  # known until released
    gpu.release_atoms([atoms[2], atoms[1]])
    gpu.release_kernel(kernels[1])
    for ask in (gpu.atom_done_ns, gpu.kernel_of, gpu.atom_busy_ns):
        with pytest.raises(InvalidArgument, match="released"):
            ask(atoms[1])
    with pytest.raises(UnknownKernel, match="released"):
        gpu.kernel_done_ns(kernels[1])
    with pytest.raises(InvalidArgument, match="released"):
        gpu.release_atoms([atoms[1]])  # twice
    assert gpu.add_kernel(desc) == 1
    assert gpu.launch(ctx, desc) == 1  # atom 0 is not released: 1 is the lowest free id
    assert gpu.kernel_done_ns(kernels[0]) == 100  # a kernel lives until released
    stats = gpu.stats()
    assert (stats.atoms_launched, stats.atoms_completed, stats.kernels_completed) == (4, 3, 3)


def test_a_device_that_keeps_history_keeps_what_is_released(device_cls, small):
    gpu = device_cls(small)
    ctx = gpu.create_context()
    desc = KernelDesc(name="k", grid_blocks=2, blocks_per_tpc=1, block_duration_ns=100)
    atom = gpu.launch(ctx, desc)
    [done] = gpu.advance()
    gpu.release_atoms([atom])
    gpu.release_kernel(done.kernel_id)
    assert gpu.atom_done_ns(atom) == 100 and gpu.kernel_done_ns(done.kernel_id) == 100
    assert gpu.launch(ctx, desc) == 1


# -- the driver's scheduler, long-lived ------------------------------------------------


def held(scheduler: StreamScheduler) -> dict[str, int]:
    """The size of every table of the scheduler's loop and its engine (their
    capacities: names ending in "table"), and of every per-atom or
    per-kernel container (the ids handed out, and what is held).  FIFO ids
    are recycled once half the FIFO table is taken, so the FIFO table and
    hash bound them."""
    e = scheduler.gpu
    t = e._st
    d = scheduler.loop.dev
    return {
        "engine atom table": t.atoms.shape[1],
        "completion table": t.done.shape[0],
        "fifo table": t.fifos.shape[1],
        "clock table": t.clocks.shape[1],
        "atom table": d.atoms.shape[1],
        "free atom table": d.free.shape[0],
        "kernel table": d.kern.shape[1],
        "stream table": d.st.shape[1],
        "timer table": d.timers.shape[1],
        "finished kernel table": d.fin.shape[1],
        "fifo hash table": d.fifo_hash.shape[1],
        "clock log table": d.clock_log.shape[1],
        "atom ids": int(d.sc[D_NATOMS]),
        "timers": int(d.sc[D_NTIMERS]),
        "clock log": int(d.sc[D_NCLOCKS]),
        "kernel ids": len(e._kernels),
        "free kernel ids": len(e._free_kernels),
        "block costs": len(e._cost_of),
        "results": len(e._results),
        "kernels in the loop": len(scheduler._kernels),
        "atoms in flight": sum(len(s.inflight_masks) for s in scheduler.streams),
        "queued kernels": sum(s.pending for s in scheduler.streams),
    }


KERNELS = 20_000


@pytest.mark.slow  # 20,000 kernels under each policy
@pytest.mark.parametrize("policy", [None, "lithos", "timeslice"])
def test_a_long_lived_scheduler_holds_only_the_work_in_flight(policy):
    """20,000 kernels of programs, on 3 contexts of 2 streams, beside
    kernel-space inference batches through the driver's port (their kernels
    scheduled as the programs' are): nothing grows with them."""
    rng, features = random.Random(1), np.random.default_rng(1)
    driver = GpuDriver("a100")
    engine, scheduler = driver.engine, driver.scheduler
    scheduler.select(policy)
    inference = VgpuInferenceBackend(port=InferencePort(driver))
    # The programs' kernels come straight to the scheduler here, not through
    # the driver: release them as the driver releases its own.
    scheduler.on_kernel_done = lambda ctx, kernel: (
        ctx != inference.ctx and engine.release_kernel(kernel)
    )
    model = Model("m", (8, 16, 2))
    contexts = [engine.create_context() for _ in range(3)]
    now = 0
    most: dict[str, int] = {}
    at_half: dict[str, int] = {}
    for launched in range(KERNELS):
        ctx, stream = rng.choice(contexts), rng.randrange(2)
        grid, block_us = rng.choice([27, 54, 108, 216]), rng.choice([20, 50, 100])
        desc = KernelDesc(
            name=f"k{grid}", grid_blocks=grid, blocks_per_tpc=2, block_duration_ns=block_us * 1000
        )
        spec = LaunchSpec(
            desc.name, grid, float(block_us), priority=rng.randrange(2), stream=stream
        )
        scheduler.submit(ctx, stream, engine.add_kernel(desc), desc, spec)
        now += rng.randrange(300_000)  # the device is about half busy
        if launched % 50 == 0:  # an advisor's batch, run to its completion
            inference.run(model, features.random((4, 8), dtype=np.float32), now)
        driver.advance_to(now)
        for name, size in held(scheduler).items():
            most[name] = max(most.get(name, 0), size)
        if launched == KERNELS // 2:
            at_half = dict(most)
    while scheduler.busy:
        now += 10_000_000
        scheduler.catch_up(now)
    assert engine.stats().kernels_completed == KERNELS + KERNELS // 50
    tables = [name for name in most if name.endswith("table")]
    counts = {name: v for name, v in most.items() if name not in tables}
    # Block costs outlive their kernels, the last IDLE_COSTS_KEPT of them.
    assert counts.pop("block costs") <= IDLE_COSTS_KEPT + 256
    assert max(counts.values()) <= 256, sorted(counts.items(), key=lambda kv: -kv[1])[:3]
    assert {t: most[t] for t in tables} == {t: at_half[t] for t in tables}  # none grew since
    after = held(scheduler)
    assert after["atoms in flight"] == after["queued kernels"] == after["kernels in the loop"] == 0
    assert scheduler.done[inference.ctx] == inference.batches == KERNELS // 50
    assert after["results"] == 0 and len(engine._free_kernels) == after["kernel ids"]


# -- the booted driver, through its API -----------------------------------------------


def booted_driver(k: Kernel):
    """The vGPU driver server's state (its task's `driver`), to count what it holds."""
    task = next(t for t in k.tasks.values() if t.name == "vgpu")
    return task.gen.gi_frame.f_locals["driver"]


def driver_held(driver) -> dict[str, int]:
    engine = driver.engine
    return {
        "atom table": engine._st.atoms.shape[1],
        "atom ids": int(driver.scheduler.loop.dev.sc[D_NATOMS]),
        "kernel ids": len(engine._kernels),
        "block costs": len(engine._cost_of),
        "fifos": len(engine._fifo_of),
        "atoms in flight": sum(len(s.inflight_masks) for s in driver.scheduler.streams),
        "kernels running": len(driver._engine_id) + len(driver._launched),
        "kernels remembered": sum(
            len(c.running) + len(c.finished) for c in driver.contexts.values()
        ),
    }


GRAPH = LaunchGraph([LaunchSpec(f"layer{i}", grid_blocks=54, block_us=10.0) for i in range(8)])


def test_the_booted_driver_holds_only_what_its_programs_can_still_ask(malv_kernel: Kernel):
    sizes: list[dict[str, int]] = []
    driver = booted_driver(malv_kernel)

    def program(proc, log):
        ctx = yield from open_context(proc)
        for i in range(300):  # 2,700 kernels: a graph and a kernel, each synced
            yield from ctx.sync((yield from ctx.launch_graph(GRAPH)))
            kernel = yield from ctx.launch(LaunchSpec("k", grid_blocks=108, block_us=20.0))
            log.append((yield from ctx.sync(kernel)))
            if i in (30, 299):
                sizes.append(driver_held(driver))
        try:  # it was told: the driver forgot it, and says so
            yield from ctx.sync(kernel)
        except UsageError as exc:
            log.append(str(exc))
        yield from ctx.destroy()

    log = run_program(malv_kernel, program)
    assert "no longer remembers it" in log[-1] and all(t > 0 for t in log[:-1])
    early, late = sizes
    assert late == early, sizes  # no table grew, and nothing more is held
    assert max(v for name, v in late.items() if not name.endswith("table")) <= 256, late

"""The numba engine and the plain-Python reference model agree exactly.

A seeded driver plays a random workload on both: several contexts,
priorities, masks and block sizes, kernels cut into atoms of random sizes,
atoms launched at completion events, and clock changes.  Every completion,
every block's TPC, start and end, and every stats snapshot must be equal;
the energy must agree to 1e-9.
"""

from __future__ import annotations

import math
import random

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.vgpu.engine import Engine
from drivers.vgpu.presets import a100, h100, scaled
from drivers.vgpu.reference import ReferenceEngine
from drivers.vgpu.work import KernelDesc

BLOCK_SIZES = [1, 2, 3, 4, 8, 16]


def random_kernel(rng: random.Random) -> KernelDesc:
    return KernelDesc(
        name="k",
        grid_blocks=rng.randint(1, 120),
        blocks_per_tpc=rng.choice(BLOCK_SIZES[: rng.randint(1, len(BLOCK_SIZES))]),
        block_duration_ns=rng.randint(20, 3000),
        mem_fraction=rng.choice([0.0, 0.0, 1.0, rng.random()]),
        priority=rng.randint(0, 2),
    )


def random_mask(rng: random.Random, n_tpcs: int) -> int | None:
    full = (1 << n_tpcs) - 1
    kind = rng.randrange(4)
    if kind == 0:
        return None
    if kind == 1:  # a contiguous partition
        lo = rng.randrange(n_tpcs)
        hi = rng.randint(lo + 1, n_tpcs)
        return ((1 << hi) - 1) & ~((1 << lo) - 1)
    return rng.randint(1, full)


def plan_atoms(rng: random.Random, kernel: KernelDesc) -> list[tuple[int, int]]:
    """The kernel's blocks cut into consecutive ranges of random sizes."""
    cuts = sorted(
        rng.sample(range(1, kernel.grid_blocks), min(kernel.grid_blocks - 1, rng.randint(0, 4)))
    )
    bounds = [0, *cuts, kernel.grid_blocks]
    return list(zip(bounds, bounds[1:], strict=False))


def play(device_cls, seed: int, batch: bool):
    """Drive one random workload; return everything observable."""
    rng = random.Random(seed)
    spec = scaled(rng.choice([a100, h100]), rng.choice([1, 2, 5, 8, 54]), rng.choice([500, 20_000]))
    gpu = device_cls(spec, record_blocks=True, dispatch_order=rng.choice(["context", "launch"]))
    ctxs = [gpu.create_context() for _ in range(rng.randint(1, 5))]
    pending: list[tuple] = []  # atoms planned but not yet launched
    for _ in range(rng.randint(1, 6)):
        kernel = random_kernel(rng)
        kid = gpu.add_kernel(kernel)
        ctx, mask = rng.choice(ctxs), random_mask(rng, spec.n_tpcs)
        for begin, end in plan_atoms(rng, kernel):
            priority = rng.choice([None, rng.randint(0, 3)])
            pending.append((ctx, kid, begin, end, mask, priority))
    rng.shuffle(pending)

    last_order = dict.fromkeys(ctxs, 0)

    def launch_some(count: int) -> None:
        for _ in range(min(count, len(pending))):
            ctx, *rest = pending.pop()
            order = None
            if rng.random() < 0.5:  # enqueued by the host before it reaches the device
                order = max(last_order[ctx], gpu.now_ns - rng.randint(0, 3000))
            last_order[ctx] = gpu.now_ns if order is None else order
            gpu.launch(ctx, *rest, order=order)

    trace = []
    if batch:
        launch_some(len(pending))
        for mhz in rng.sample(list(spec.clocks_mhz), 3):
            gpu.set_clock(mhz)
        trace.append(gpu.run_batch(gpu.now_ns + rng.randint(0, 20_000)))
        trace.append(gpu.run_batch())
    else:
        launch_some(rng.randint(1, 3))
        for _ in range(400):
            until = rng.choice([None, gpu.now_ns + rng.randint(0, 5000)])
            events = gpu.advance(until)
            stats = gpu.stats()
            trace.append((events, attrs.evolve(stats, energy_j=0.0)))
            if rng.random() < 0.2:
                gpu.set_clock(rng.choice(list(spec.clocks_mhz)))
            if events or until is not None or rng.random() < 0.5:
                launch_some(rng.randint(0, 3))
            if not events and until is None and not pending:
                break
    busy = [gpu.atom_busy_ns(a) for a in range(gpu.stats().atoms_launched)]
    return trace + [busy], gpu.block_log(), gpu.energy_j, gpu.now_ns


def assert_same_run(seed: int, batch: bool) -> None:
    trace, log, energy, now = play(Engine, seed, batch)
    ref_trace, ref_log, ref_energy, ref_now = play(ReferenceEngine, seed, batch)
    assert log == ref_log
    assert trace == ref_trace
    assert now == ref_now
    assert math.isclose(energy, ref_energy, rel_tol=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_incremental_runs_agree_block_for_block(seed):
    assert_same_run(seed, batch=False)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_batch_runs_agree_block_for_block(seed):
    assert_same_run(seed, batch=True)


def test_a_fixed_seed_agrees_and_runs_many_blocks():
    trace, log, _, _ = play(Engine, 12345, batch=False)
    assert len(log) > 50 and any(events for events, _ in trace)
    assert_same_run(12345, batch=False)

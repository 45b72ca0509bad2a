"""Property: whatever programs launch and whichever policies take over, no kernel is lost.

The driver's `StreamScheduler` takes launches from programs (user input)
and policies from modules, and re-divides the device as streams come and
go.  Hypothesis drives random launches, policy switches and context
teardowns through it; every kernel must complete, each stream's kernels
in launch order, and the device must end idle.
"""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.vgpu.engine import Engine
from drivers.vgpu.policies import POLICY_NAMES
from drivers.vgpu.scheduler import StreamScheduler
from drivers.vgpu.server import LaunchSpec
from drivers.vgpu.work import KernelDesc

launches = st.tuples(
    st.integers(0, 3),  # context
    st.integers(0, 1),  # stream
    st.integers(1, 400),  # grid blocks
    st.integers(1, 300),  # block time, us
    st.integers(0, 1),  # priority
    st.sampled_from([0.0, 0.3, 0.9]),  # memory-bound fraction
    st.integers(0, 400),  # us after the previous event
)
events = st.lists(
    st.one_of(
        launches.map(lambda launch: ("launch", launch)),
        st.sampled_from((None, *POLICY_NAMES)).map(lambda name: ("policy", name)),
        st.integers(0, 3).map(lambda ctx: ("teardown", ctx)),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(events)
def test_every_launched_kernel_completes_in_stream_order_under_any_policy(script):
    engine = Engine("a100", dispatch_order="launch")
    scheduler = StreamScheduler(engine, lambda ctx: None)
    contexts = {c: engine.create_context() for c in range(4)}
    launched: dict[tuple[int, int], list[int]] = {}
    now = 0
    for kind, what in script:
        if kind == "policy":
            try:
                scheduler.select(what)
            except ValueError:
                pass  # a policy that cannot serve these streams (MIG beyond 7): refused
        elif kind == "teardown":
            ctx = contexts[what]
            if scheduler.context_idle(ctx):
                scheduler.remove_context(ctx)
        else:
            c, stream, grid, block_us, priority, mem, gap_us = what
            now += gap_us * 1000
            scheduler.catch_up(now)
            spec = LaunchSpec("k", grid, float(block_us), priority=priority, stream=stream)
            desc = KernelDesc(
                name=f"k{grid}", grid_blocks=grid, blocks_per_tpc=2,
                block_duration_ns=block_us * 1000, mem_fraction=mem, priority=priority,
            )  # fmt: skip
            kernel = engine.add_kernel(desc)
            scheduler.submit(contexts[c], stream, kernel, desc, spec)
            launched.setdefault((c, stream), []).append(kernel)
        scheduler.refused = None  # the driver would eject the advisor here
    # Run until every kernel is done (MIG's downtime and policy timers included).
    deadline = now + 60_000_000_000
    while scheduler.busy and now < deadline:
        now += 100_000_000
        scheduler.catch_up(now)
    assert not scheduler.busy
    for kernels in launched.values():
        done = [engine.kernel_done_ns(k) for k in kernels]
        assert None not in done
        # A stream's kernels ran one after another, in launch order.
        assert all(a < b for a, b in pairwise(done))

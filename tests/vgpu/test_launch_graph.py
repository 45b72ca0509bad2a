"""A launch graph reaches the loop in one call per stream, and that changes nothing.

The driver hands a graph's kernels to its scheduler at once
(`StreamScheduler.submit_graph`): each run of them on one stream goes to
the loop as a chain, in one compiled call, instead of one call per kernel.
What the device does must be exactly what it did when the same kernels
were submitted one by one at the same instant, under every policy.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.vgpu.engine import Engine
from drivers.vgpu.policies import POLICY_NAMES
from drivers.vgpu.scheduler import StreamScheduler
from drivers.vgpu.server import GRAPHS_KEPT, GpuDriver, GpuRequestError, LaunchGraph, LaunchSpec
from drivers.vgpu.work import KernelDesc

kernels = st.lists(
    st.tuples(
        st.integers(0, 1),  # stream
        st.integers(1, 300),  # grid blocks
        st.integers(1, 200),  # block time, us
        st.integers(0, 1),  # priority
        st.sampled_from([0.0, 0.4]),  # memory-bound fraction
    ),
    min_size=1,
    max_size=12,
)
#: Two rounds of launches: the second finds the first's streams busy (or done).
rounds = st.tuples(kernels, st.integers(0, 3_000), kernels)


def _specs(ks: list[tuple[int, int, int, int, float]]) -> list[tuple[LaunchSpec, KernelDesc]]:
    out = []
    for i, (stream, grid, block_us, priority, mem) in enumerate(ks):
        spec = LaunchSpec(f"k{i % 3}", grid, float(block_us), priority=priority, stream=stream)
        desc = KernelDesc(
            name=spec.name, grid_blocks=grid, blocks_per_tpc=2,
            block_duration_ns=block_us * 1000, mem_fraction=mem, priority=priority,
        )  # fmt: skip
        out.append((spec, desc))
    return out


def _run(policy: str | None, script: tuple, as_graph: bool) -> list[int | None]:
    """Every kernel's completion time, the launches made as graphs or one by one."""
    first, gap_us, second = script
    engine = Engine("a100", dispatch_order="launch")
    scheduler = StreamScheduler(engine, lambda ctx: None)
    ctx = engine.create_context()
    scheduler.select(policy)
    ids = []
    for now_ns, ks in ((0, first), (gap_us * 1000, second)):
        scheduler.catch_up(now_ns)
        pairs = _specs(ks)
        kernel_ids = [engine.add_kernel(desc) for _, desc in pairs]
        specs, descs = [p[0] for p in pairs], [p[1] for p in pairs]
        if as_graph:
            scheduler.submit_graph(ctx, kernel_ids, descs, specs)
        else:
            for kernel_id, spec, desc in zip(kernel_ids, specs, descs, strict=True):
                scheduler.submit(ctx, spec.stream, kernel_id, desc, spec)
        ids += kernel_ids
    now = gap_us * 1000
    while scheduler.busy:
        now += 50_000_000
        scheduler.catch_up(now)
    return [engine.kernel_done_ns(k) for k in ids]


@pytest.mark.parametrize("policy", [None, *POLICY_NAMES])
@settings(max_examples=15, deadline=None)
@given(script=rounds)
def test_a_graph_runs_as_its_kernels_launched_one_by_one(policy, script):
    one_by_one = _run(policy, script, as_graph=False)
    assert None not in one_by_one
    assert _run(policy, script, as_graph=True) == one_by_one


def _driver_with_context():
    driver = GpuDriver("a100")
    ctx = driver.engine.create_context()
    from drivers.vgpu.server import _Context

    driver.contexts[ctx] = _Context(ctx, cap_slot=0)
    return driver, driver.contexts[ctx]


def test_a_graph_is_checked_once_and_its_last_kernel_is_the_programs():
    driver, ctx = _driver_with_context()
    graph = LaunchGraph([LaunchSpec("a", 8, 10.0), LaunchSpec("b", 8, 10.0)])
    first = driver.launch_graph(ctx, graph)
    descs, chain = driver._graph_descs(graph)
    second = driver.launch_graph(ctx, graph)
    again = driver._graph_descs(graph)
    assert again[0] is descs and again[1] is chain  # the same checked descriptors
    assert ctx.running == {first, second}  # a graph's last kernel is the one it names
    assert second == first + 2


def test_a_graph_with_one_bad_kernel_launches_none():
    driver, ctx = _driver_with_context()
    bad = LaunchGraph([LaunchSpec("a", 8, 10.0), LaunchSpec("b", 0, 10.0)])
    with pytest.raises(GpuRequestError):
        driver.launch_graph(ctx, bad)
    assert not ctx.running and driver._next_kernel == 0
    with pytest.raises(GpuRequestError):
        driver.launch_graph(ctx, LaunchGraph([]))
    with pytest.raises(GpuRequestError):
        driver.launch_graph(ctx, LaunchGraph(["not a spec"]))


def test_the_kept_graphs_are_bounded():
    driver, ctx = _driver_with_context()
    for i in range(3 * GRAPHS_KEPT):
        driver.launch_graph(ctx, LaunchGraph([LaunchSpec(f"k{i}", 1, 1.0)]))
    assert len(driver._graphs) == GRAPHS_KEPT


def test_repeated_launches_share_a_descriptor_and_a_look_alike_is_still_checked():
    driver, _ = _driver_with_context()
    first = driver._kernel_desc(LaunchSpec("k", 8, 10.0, priority=1))
    assert driver._kernel_desc(LaunchSpec("k", 8, 10.0, priority=1)) is first
    for odd in (True, 1.0):  # equal to 1, and hashed alike: refused all the same
        with pytest.raises(GpuRequestError, match="priority must be an integer"):
            driver._kernel_desc(LaunchSpec("k", 8, 10.0, priority=odd))

    class Name(str):
        def __hash__(self):
            raise RuntimeError("a program's own hash is never called")

    assert driver._kernel_desc(LaunchSpec(Name("k"), 8, 10.0)).name == "k"

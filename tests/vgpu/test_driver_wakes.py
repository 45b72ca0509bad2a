"""The driver wakes for a waiting program when its work can be done, not at every block.

A program that waits for the last kernel of a launch graph is answered at
that kernel's completion time, exactly.  The driver used to wake at every
event of the device until then (each block group ending); it now wakes at
the later of the next event and a lower bound on the completion
(`_Chain`: the stream's unfinished kernels, each at least as long as alone
on the whole device at the highest clock).  The bound must never pass the
completion, whatever the policy, the other tenants and the clock do.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.vgpu import server as server_mod
from drivers.vgpu.policies import POLICY_NAMES
from drivers.vgpu.server import GpuDriver, LaunchGraph, LaunchSpec, _Context
from kernel.traps import GetTime
from userland.gpulib import open_context

launches = st.lists(
    st.builds(
        LaunchSpec,
        name=st.sampled_from(["a", "b", "c"]),
        grid_blocks=st.integers(1, 400),
        block_us=st.sampled_from([1.0, 7.5, 40.0, 250.0]),
        blocks_per_tpc=st.integers(1, 4),
        mem_fraction=st.sampled_from([0.0, 0.3, 0.9, 1.0]),
        priority=st.integers(0, 1),
        stream=st.integers(0, 1),
    ),
    min_size=1,
    max_size=10,
)
#: Each tenant's launches: (when, graph), in time order.
tenant = st.lists(st.tuples(st.integers(0, 2_000), launches), min_size=1, max_size=3)

POLICIES = [
    (None, None),
    *((name, None) for name in POLICY_NAMES),
    ("lithos", {"rightsizing": True, "dvfs": True}),
]


@pytest.mark.parametrize(("policy", "params"), POLICIES)
@settings(max_examples=8, deadline=None)
@given(tenants=st.lists(tenant, min_size=1, max_size=3))
def test_the_bound_never_passes_the_completion(policy, params, tenants):
    driver = GpuDriver("a100")
    driver.scheduler.select(policy, params)
    contexts = []
    for _ in tenants:
        ctx = driver.engine.create_context()
        driver.contexts[ctx] = _Context(ctx, cap_slot=0)
        contexts.append(driver.contexts[ctx])
    script = sorted(
        (
            (at_us * 1000, i, j, graph)
            for i, t in enumerate(tenants)
            for j, (at_us, graph) in enumerate(t)
        ),
        key=lambda item: item[:3],
    )
    bounds: dict[int, list[int]] = {}  # waited kernel -> every bound the driver saw
    now = 0
    pending = list(script)
    while pending or driver.busy():
        launch_ns = pending[0][0] if pending else None
        event_ns = driver.next_event_ns(now)
        nxt = min(t for t in (launch_ns, event_ns) if t is not None)
        now = nxt if nxt > now else now + 20_000  # the driver's sync tick, as `gpu_server`
        driver.advance_to(now)
        while pending and pending[0][0] <= now:
            _, i, _, graph = pending.pop(0)
            last = driver.launch_graph(contexts[i], LaunchGraph(graph))
            bounds[last] = []
        for last in bounds:
            chain = driver._chains.get(last)
            if chain is not None:
                bounds[last].append(chain.earliest_ns(now))
    for ctx in contexts:
        for last, seen in bounds.items():
            if last in ctx.finished:
                assert max(seen, default=0) <= ctx.finished[last]
    assert not driver._chains  # every chain is forgotten once its kernel is done


def _count_wakes(monkeypatch) -> list[int]:
    wakes = [0]
    advance = server_mod.GpuDriver.advance_to

    def counting(self, now_ns):
        wakes[0] += 1
        return advance(self, now_ns)

    monkeypatch.setattr(server_mod.GpuDriver, "advance_to", counting)
    return wakes


def _run(k, program) -> list:
    log: list = []
    shell = next(t for t in k.tasks.values() if t.name == "sh")
    caps = {"gpu": shell.cspace.lookup(shell.proc.caps["gpu"])}
    pid = k.spawn(lambda proc: program(proc, log), caps=caps, name="gputest")
    while pid in k.tasks:
        k.run(until=k.loop.now_ns + 100_000_000)
    return log


def test_a_program_waiting_for_a_graph_is_answered_at_its_end_with_few_wakes(
    malv_kernel, monkeypatch
):
    wakes = _count_wakes(monkeypatch)
    spec = LaunchSpec("k", grid_blocks=108, block_us=100.0)  # one full wave: 100 µs
    graph = LaunchGraph((spec,) * 40)

    def program(proc, log):
        ctx = yield from open_context(proc)
        t0 = yield from ctx.sync()
        before = wakes[0]
        last = yield from ctx.launch_graph(graph)
        done = yield from ctx.sync(last)
        log.append((done - t0, (yield GetTime()) - done, wakes[0] - before))

    [(took_ns, late_ns, woke)] = _run(malv_kernel, program)
    assert 40 * 100_000 <= took_ns < 40 * 100_000 + 20_000  # alone: 40 waves in a row
    assert late_ns < 100_000  # answered at the completion, not a kernel later
    print(woke)
    assert woke <= 8  # the launch, the sync and the answer; not one wake per kernel (40)


def test_beside_other_work_the_answer_is_still_exact_and_wakes_are_fewer_than_events(
    malv_kernel, monkeypatch
):
    """Two contexts' graphs share the device; the program waits for both."""
    wakes = _count_wakes(monkeypatch)
    mine = LaunchGraph((LaunchSpec("k", grid_blocks=216, block_us=50.0, mem_fraction=0.3),) * 30)
    theirs = LaunchGraph((LaunchSpec("j", grid_blocks=160, block_us=30.0, mem_fraction=0.6),) * 40)

    def program(proc, log):
        ctx = yield from open_context(proc)
        other = yield from open_context(proc)
        t0 = yield from ctx.sync()
        before = wakes[0]
        last = yield from ctx.launch_graph(mine)
        their_last = yield from other.launch_graph(theirs)
        done = yield from ctx.sync(last)
        answered = yield GetTime()
        their_done = yield from other.sync(their_last)
        their_late = (yield GetTime()) - their_done
        log.append((answered - done, their_done - t0, their_late, wakes[0] - before))

    [(late_ns, their_ns, their_late_ns, woke)] = _run(malv_kernel, program)
    # Theirs waited behind mine (first launched, first served): its
    # bound, 40 x 2 waves x 30 µs, was far from its completion.
    assert their_ns > 40 * 2 * 30_000 + 1_000_000
    assert late_ns < 20_000 and their_late_ns < 20_000  # each answered at its completion
    # Each of the 60 + 40 waves ends at an event of its own, and the old
    # driver woke at every one of them.
    assert woke < 40

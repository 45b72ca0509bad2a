"""A kernel beside another tenant's long kernel, in the sharing simulator.

Tenant B (40% of the a100) runs a kernel of 4,320 long blocks; tenant A
(60%) sends one request of one wave of such blocks.  How long A's first
block waits is what the policy promises: under time slicing, the rest of
B's slice and the block then running; under LithOS, which gives A its own
TPCs, the block running on them.  And under LithOS, blocks A stole from B
while B was idle wait for one of B's atoms once B is back, not for B's
whole kernel.  Both forms of each policy, the compiled one and its Python
definition, keep the promise, with the same results.
"""

from __future__ import annotations

import pytest

from drivers.vgpu.policies import make_policy
from drivers.vgpu.sharing import Simulation, Tenant
from drivers.vgpu.sharing.sim import HOST_LAUNCH_NS
from drivers.vgpu.traces import Workload
from drivers.vgpu.work import KernelDesc

WAVE = 108  # blocks that fill the a100 once (54 TPCs, 2 per TPC)
#: When A's request arrives, in ns: at B's start, and at several phases of B's blocks.
ARRIVALS_NS = [0, 2_300_000, 5_300_000, 11_000_000, 11_700_000]
#: B's time slice: its 40% of two 500 us slices.
B_SLICE_NS = 400_000


def workload(name: str, grid: int, block_ns: int) -> Workload:
    kernel = KernelDesc(f"{name}.k", grid, 2, block_ns)
    return Workload(name, (kernel,), block_ns, (0,), "test")


def run(
    policy: str, block_ns: int, arrival_ns: int, *, compiled: bool, first: str | None = None
) -> tuple[int, int | None]:
    """A's request latency, and how long its kernel waited from its host
    launch to its first block (None: it had not started by the end; also
    None from the compiled form, which runs without a block log).
    `first`: a policy in charge until `policy` takes over, at 1 ms."""
    a = Tenant("A", workload("a", WAVE, block_ns), "open", (arrival_ns,), quota=0.6)
    b = Tenant("B", workload("b", 40 * WAVE, block_ns), "be", quota=0.4)
    sim = Simulation(
        [a, b], make_policy(first or policy), duration_ns=arrival_ns + 12 * block_ns,
        compiled=compiled, record_blocks=not compiled,
    )  # fmt: skip
    sim.record_launches = True
    if first is not None:
        sim.call_at(1_000_000, sim.set_policy, make_policy(policy))
    result = sim.run()
    assert (sim.compiled is not None) == compiled
    [latency_ns] = result.streams[0].latencies_ns
    if compiled:
        return latency_ns, None
    stream_of = [row[0] for row in sim.atom_log()]
    start = min(
        (r.start_ns for r in sim.gpu.block_log() if stream_of[r.atom_id] == 0), default=None
    )
    return latency_ns, None if start is None else start - (arrival_ns + HOST_LAUNCH_NS)


@pytest.mark.parametrize("block_us", [100, 600, 2_000, 5_000])
@pytest.mark.parametrize(
    ("policy", "bound_ns"),
    [("timeslice", lambda block_ns: B_SLICE_NS + block_ns), ("lithos", lambda block_ns: block_ns)],
    ids=["timeslice", "lithos"],
)
def test_a_kernel_behind_a_long_kernel_waits_at_most_one_block_in_both_forms(
    policy: str, bound_ns, block_us: int
):
    block_ns = block_us * 1000
    for arrival_ns in ARRIVALS_NS:
        latency_ns, wait_ns = run(policy, block_ns, arrival_ns, compiled=False)
        assert wait_ns is not None and wait_ns <= bound_ns(block_ns), f"arriving at {arrival_ns} ns"
        assert run(policy, block_ns, arrival_ns, compiled=True) == (latency_ns, None)


@pytest.mark.parametrize("block_us", [100, 600, 2_000, 5_000])
def test_lithos_taking_over_puts_a_newly_arrived_kernel_above_the_work_it_found(block_us: int):
    # MPS launched B's kernel whole, on every TPC, at the normal priority.
    # LithOS takes over at 1 ms: B's atom stays as it was launched, on TPCs
    # that are now A's; A's kernel goes above it, not behind its 4,320 blocks,
    # and steals none of B's TPCs, busy with it: its two waves run on its own.
    block_ns = block_us * 1000
    for arrival_ns in ARRIVALS_NS[1:]:
        latency_ns, wait_ns = run("lithos", block_ns, arrival_ns, compiled=False, first="mps")
        assert wait_ns is not None and wait_ns <= block_ns, f"arriving at {arrival_ns} ns"
        assert latency_ns <= HOST_LAUNCH_NS + 3 * block_ns
        compiled = run("lithos", block_ns, arrival_ns, compiled=True, first="mps")
        assert compiled == (latency_ns, None)


@pytest.mark.parametrize("block_us", [100, 600, 2_000, 5_000])
def test_lithos_starts_stolen_blocks_after_one_atom_of_the_owner_in_both_forms(block_us: int):
    # A's request (216 blocks of 200 us) arrives while B is idle: it runs on
    # A's TPCs and, stolen, on B's, 400 us alone.  B's long kernel arrives
    # 50 us later: its first atom goes before A's stolen blocks not yet
    # started, and those before the rest of B's kernel.
    block_ns = block_us * 1000
    a = Tenant("A", workload("a", 216, 200_000), "open", (1_000_000,), quota=0.6)
    b = Tenant("B", workload("b", 40 * WAVE, block_ns), "open", (1_050_000,), quota=0.4)
    latencies = []
    for compiled in (False, True):
        sim = Simulation(
            [a, b], make_policy("lithos"), duration_ns=3_000_000 + 2 * block_ns,
            compiled=compiled,
        )  # fmt: skip
        result = sim.run()
        assert (sim.compiled is not None) == compiled
        latencies.append(result.streams[0].latencies_ns)
    python, compiled = latencies
    assert compiled == python
    # An atom of B's: 250-500 us of work, or one block where a block is longer.
    assert python[0] <= HOST_LAUNCH_NS + 400_000 + max(block_ns, 500_000)

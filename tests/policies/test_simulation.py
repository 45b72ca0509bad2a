"""The simulator: stream order, request accounting, policy switches, bad input."""

from __future__ import annotations

from itertools import pairwise

import pytest

from drivers.vgpu.errors import InvalidArgument
from drivers.vgpu.policies import POLICY_NAMES, UnknownPolicy, make_policy
from drivers.vgpu.sharing import Simulation, Tenant
from drivers.vgpu.sharing.sim import HOST_LAUNCH_NS
from tests.policies.conftest import SPEC, blocks_of, kernel, kernel_runs, simulate, workload


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_every_policy_runs_each_kernel_once_in_stream_order(name, small_tenants):
    sim, result = simulate(name, small_tenants, 6_000_000, record_blocks=True)
    log = sim.gpu.block_log()
    runs = [(b.atom_id, b.block) for b in log]
    assert len(runs) == len(set(runs)), "no block runs twice"
    kernel_of = kernel_runs(sim)
    stream_of = [row[0] for row in sim.atom_log()]
    for i, s in enumerate(sim.streams):
        kernels = sorted({kernel_of[b.atom_id] for b in log if stream_of[b.atom_id] == i})
        # A stream's kernels never overlap: each starts after the previous ended.
        spans = []
        for k in kernels:
            blocks = [b for b in log if kernel_of[b.atom_id] == k]
            spans.append((min(b.start_ns for b in blocks), max(b.end_ns for b in blocks)))
        assert all(b[0] >= a[1] for a, b in pairwise(spans)), (name, s.name)
    hp = result.streams[0]
    assert hp.completed > 0 and all(lat >= 50_000 for lat in hp.latencies_ns)


def test_open_loop_latency_counts_queueing_and_unfinished_requests():
    w = workload("w", [kernel("k", 28, 100_000)])  # 100 us on the whole device
    t = Tenant("t", w, "open", (0, 10_000, 20_000, 950_000))
    _, result = simulate("mps", (t,), 1_000_000)
    lat = result.streams[0].latencies_ns
    # Each request's kernel reaches the GPU one host launch after the request
    # starts; they queue behind each other, and the last, arrived at 950 us,
    # is still running.
    launch = HOST_LAUNCH_NS
    assert sorted(lat) == [50_000, 100_000 + launch, 190_000 + 2 * launch, 280_000 + 3 * launch]
    assert result.streams[0].completed == 3


@pytest.mark.parametrize("before, after", [("reef", "lithos"), ("lithos", "timeslice")])
def test_a_policy_switch_while_running_hands_held_kernels_over(small_tenants, before, after):
    sim = Simulation(
        small_tenants, make_policy(before), spec=SPEC, duration_ns=10_000_000, warmup_ns=5_000_000
    )
    sim.call_at(4_000_000, sim.set_policy, make_policy(after))
    result = sim.run()
    assert result.policy == after
    # Every tenant goes on completing requests under the new policy.
    assert all(s.completed > 0 for s in result.streams)


def test_unknown_policies_and_bad_parameters_are_clear_errors():
    with pytest.raises(UnknownPolicy, match="unknown policy 'fifo'; known policies: timeslice"):
        make_policy("fifo")
    with pytest.raises(InvalidArgument, match="policy 'mps'"):
        make_policy("mps", quota=1)
    with pytest.raises(ValueError, match="slice"):
        make_policy("timeslice", slice_ns=0)


def test_tenants_are_checked():
    w = workload("w", [kernel("k", 1, 1000)])
    with pytest.raises(InvalidArgument, match="tenant kind"):
        Tenant("t", w, "batch")
    with pytest.raises(InvalidArgument, match="quota"):
        Tenant("t", w, "be", quota=1.5)
    t = Tenant("t", w, "be")
    with pytest.raises(InvalidArgument, match="distinct"):
        Simulation((t, t), make_policy("mps"), duration_ns=1000)
    with pytest.raises(InvalidArgument, match="at least one tenant"):
        Simulation((), make_policy("mps"), duration_ns=1000)


def test_the_gpu_never_runs_a_kernel_before_its_host_launched_it():
    # Ten 1 us kernels: the host needs 5 us per launch, so the request is
    # host-bound and each kernel starts one host launch after the last.
    w = workload("w", [kernel(f"k{i}", 1, 1_000) for i in range(10)])
    t = Tenant("t", w, "open", (0,))
    sim, result = simulate("mps", (t,), 1_000_000, record_blocks=True)
    starts = sorted(b.start_ns for b in blocks_of(sim, 0))
    assert starts == [(i + 1) * HOST_LAUNCH_NS for i in range(10)]
    assert result.streams[0].latencies_ns == (10 * HOST_LAUNCH_NS + 1_000,)

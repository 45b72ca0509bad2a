"""Helpers for the sharing-policy tests: a small GPU and hand-made workloads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from drivers.vgpu.policies import make_policy
from drivers.vgpu.presets import a100, scaled
from drivers.vgpu.sharing import Simulation, Tenant
from drivers.vgpu.sharing.compiled import state_values
from drivers.vgpu.sharing.sim import RunResult
from drivers.vgpu.traces import Workload
from drivers.vgpu.work import KernelDesc

#: An A100 cut to 14 TPCs (two per MIG slice), with a 1 ms clock switch.
SPEC = scaled(a100, 14, switch_latency_ns=1_000_000)
#: The shared real workloads, beside the repository.
WORKLOADS = Path(__file__).resolve().parents[2].parent / "shared" / "workloads"


def kernel(name: str, grid: int, duration_ns: int, bpt: int = 2, mem: float = 0.2) -> KernelDesc:
    return KernelDesc(name, grid, bpt, duration_ns, mem_fraction=mem)


def workload(name: str, kernels: list[KernelDesc]) -> Workload:
    total = sum(k.block_duration_ns for k in kernels)
    return Workload(name, tuple(kernels), total, (0,) * len(kernels), "test")


def simulate(policy, tenants, duration_ns: int, **kw) -> tuple[Simulation, RunResult]:
    """Run `policy` (or the policy of that name) as it ships: in the one loop, compiled."""
    if isinstance(policy, str):
        policy = make_policy(policy)
    sim = Simulation(tenants, policy, spec=kw.pop("spec", SPEC), duration_ns=duration_ns, **kw)
    return sim, sim.run()


def policy_state(sim: Simulation) -> dict[str, Any]:
    """The named state of the policy in charge, now (during or after the run)."""
    assert sim.loop is not None, "the run has not started"
    return state_values(sim.loop.pol, sim.loop.pol_layout.state)


def kernel_runs(sim: Simulation) -> list[int]:
    """Per atom id: which run of a kernel it belongs to (a stream runs one
    kernel at a time, and a kernel's first atom starts at block 0)."""
    runs: list[int] = []
    current: dict[int, int] = {}
    for stream, _launch, _done, begin, *_ in sim.atom_log():
        if begin == 0:
            current[stream] = len(runs)  # the atom id of its first atom
        runs.append(current[stream])
    return runs


def blocks_of(sim: Simulation, stream: int) -> list:
    """The block log entries of one tenant's atoms."""
    stream_of = [row[0] for row in sim.atom_log()]
    return [b for b in sim.gpu.block_log() if stream_of[b.atom_id] == stream]


@pytest.fixture
def small_tenants():
    """An open-loop HP service, a closed-loop HP job and a best-effort job."""
    hp = workload("hp", [kernel("hp.a", 10, 20_000), kernel("hp.b", 28, 30_000, mem=0.8)])
    job = workload("job", [kernel("job.a", 20, 40_000), kernel("job.b", 6, 10_000)])
    be = workload("be", [kernel("be.a", 56, 50_000, mem=0.8), kernel("be.b", 14, 80_000)])
    arrivals = tuple(range(1_000_000, 20_000_000, 1_700_000))
    return (
        Tenant("hp", hp, "open", arrivals, quota=0.5, slo_ns=500_000),
        Tenant("job", job, "closed", quota=0.25),
        Tenant("be", be, "be", quota=0.25, run_ahead=64),
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: the fuller runs, left out of the default tier")

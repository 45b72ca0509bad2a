"""CPUs whose time a host grants: vCPUs compete for host CPUs, in virtual time."""

from __future__ import annotations

import pytest

from kernel import Kernel, Machine
from kernel.cpu import Cpu
from kernel.machine import HostCpus
from kernel.traps import Compute, GetTime

MS = 1_000_000


def compute_then_record(us: int, finished: list):
    def program(proc):
        yield Compute(us)
        finished.append((proc.name, (yield GetTime())))

    return program


def run_tasks(kernels: int, vcpus: int, host_cpus: int | None, tasks_per_kernel: int) -> list:
    """Each kernel runs `tasks_per_kernel` tasks of 10 ms; returns (name, finish time)."""
    machine = Machine()
    provider = HostCpus(machine, host_cpus) if host_cpus is not None else None
    finished: list = []
    for k in range(kernels):
        kernel = machine.kernel(name=f"k{k}", cpus=vcpus, cpu_provider=provider)
        for t in range(tasks_per_kernel):
            kernel.spawn(compute_then_record(10_000, finished), name=f"k{k}.t{t}")
    machine.run()
    machine.shutdown()
    return finished


def test_four_10ms_tasks_on_two_guests_of_2_vcpus_take_20ms_on_a_host_of_2_cpus():
    finished = run_tasks(kernels=2, vcpus=2, host_cpus=2, tasks_per_kernel=2)
    assert len(finished) == 4
    assert all(20 * MS <= t < 20.1 * MS for _, t in finished), finished


def test_on_bare_metal_the_same_tasks_take_10ms():
    finished = run_tasks(kernels=2, vcpus=2, host_cpus=None, tasks_per_kernel=2)
    assert all(10 * MS <= t < 10.01 * MS for _, t in finished), finished


def test_one_guest_alone_on_the_host_still_takes_10ms():
    finished = run_tasks(kernels=1, vcpus=2, host_cpus=2, tasks_per_kernel=2)
    assert len(finished) == 2
    assert all(10 * MS <= t < 10.01 * MS for _, t in finished), finished


def test_two_vcpus_on_one_host_cpu_take_turns():
    finished = run_tasks(kernels=1, vcpus=2, host_cpus=1, tasks_per_kernel=2)
    assert all(20 * MS <= t < 20.1 * MS for _, t in finished), finished


def test_granted_runs_are_deterministic():
    assert run_tasks(2, 2, 2, 3) == run_tasks(2, 2, 2, 3)


class NeverGrants:
    def __init__(self) -> None:
        self.requests: list[Cpu] = []
        self.released: list[Cpu] = []

    def request(self, vcpu: Cpu) -> None:
        self.requests.append(vcpu)

    def release(self, vcpu: Cpu) -> None:
        self.released.append(vcpu)


def test_a_vcpu_without_a_grant_runs_nothing_and_its_request_is_withdrawn_at_halt():
    provider = NeverGrants()
    k = Kernel(cpus=2, cpu_provider=provider)
    finished: list = []
    pid = k.spawn(compute_then_record(1_000, finished), name="starved")
    k.run(until=50 * MS)
    assert finished == [] and k.tasks[pid].cpu_ns == 0
    assert provider.requests == [k.cpus[0]]
    k.shutdown()
    assert provider.released == [k.cpus[0]]


class RecordingHostCpus(HostCpus):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.released_ns: list[int] = []

    def release(self, vcpu: Cpu) -> None:
        self.released_ns.append(self.loop.now_ns)
        super().release(vcpu)


def test_a_grant_ends_compute_at_its_end_and_the_vcpu_asks_again():
    machine = Machine()
    host = RecordingHostCpus(machine, 1, quantum_ns=3 * MS)
    k = machine.kernel(cpus=1, cpu_provider=host)
    finished: list = []
    k.spawn(compute_then_record(10_000, finished), name="t")
    machine.run()
    assert finished and 10 * MS <= finished[0][1] < 10.01 * MS
    assert host.grants == 4  # 3 + 3 + 3 + 1 ms
    # Each grant is given back at its end (to within a trap), the last when the task is done.
    expected = (3 * MS, 6 * MS, 9 * MS, finished[0][1])
    assert all(e <= r <= e + 2_000 for r, e in zip(host.released_ns, expected, strict=True))
    machine.shutdown()


def test_host_cpus_are_validated():
    with pytest.raises(ValueError, match="cpus must be a positive integer"):
        HostCpus(Machine(), 0)
    with pytest.raises(ValueError, match="quantum_ns"):
        HostCpus(Machine(), 1, quantum_ns=10)

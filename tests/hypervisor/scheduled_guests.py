"""Guests on a credit-scheduled machine, for the hypervisor tests."""

from __future__ import annotations

from kernel import Kernel, Machine
from kernel.hypervisor import CreditScheduler
from kernel.traps import Compute, GetTime


def busy(ms: int, finished: list | None = None):
    """A task that computes for `ms` ms, then notes the virtual time."""

    def program(proc):
        yield Compute(ms * 1000)
        if finished is not None:
            finished.append((yield GetTime()))

    return program


def guests(
    specs: list[tuple[int, int, int]], host_cpus: int = 2, work_ms: int = 10_000
) -> tuple[Machine, CreditScheduler, list[Kernel], list[list[int]]]:
    """Bare guest kernels (no boot) on a credit scheduler of `host_cpus` host
    CPUs, one per (weight, cap, busy tasks) spec; each task computes `work_ms`."""
    machine = Machine()
    scheduler = CreditScheduler(machine, host_cpus)
    kernels, finished = [], []
    for i, (weight, cap, tasks) in enumerate(specs):
        k = machine.kernel(name=f"g{i}", seed=i, cpus=2, gpu=None, cpu_provider=scheduler)
        scheduler.add(k, k.name, weight, cap)
        done: list[int] = []
        for _ in range(tasks):
            k.spawn(busy(work_ms, done), name="busy")
        kernels.append(k)
        finished.append(done)
    return machine, scheduler, kernels, finished

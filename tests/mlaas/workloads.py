"""What the MLaaS tests share, imported by name (so that no other directory's
conftest stands in for it): workloads that prove nothing was lost, and the
paths of the deliberately broken modules."""

from __future__ import annotations

import os

from kernel.memory import PAGE_SIZE
from kernel.traps import Compute, MemMap, MemRead, MemWrite

BROKEN = os.path.join(os.path.dirname(__file__), "broken")


def broken(name: str) -> str:
    """The path of a deliberately broken module in tests/mlaas/broken/."""
    return os.path.join(BROKEN, f"{name}.py")


def page_pattern(pid: int, page: int) -> bytes:
    seed = f"{pid}:{page};".encode()
    return (seed * (PAGE_SIZE // len(seed) + 1))[:PAGE_SIZE]


def memory_worker(pages: int, rounds: int, results: list):
    """Writes a pattern to `pages` pages, then reads them back `rounds` times.
    It appends how many pages came back wrong: nothing may be lost."""

    def worker(proc):
        base = yield MemMap(pages)
        for i in range(pages):
            yield MemWrite(base + i * PAGE_SIZE, page_pattern(proc.pid, i))
        bad = 0
        for _ in range(rounds):
            for i in range(pages):
                data = yield MemRead(base + i * PAGE_SIZE, PAGE_SIZE)
                bad += data != page_pattern(proc.pid, i)
        results.append(bad)

    return worker


def cpu_worker(ms: int, results: list):
    """Computes for `ms` milliseconds and appends "done" when it finished."""

    def worker(proc):
        for _ in range(ms):
            yield Compute(1000)
        results.append("done")

    return worker

"""`malv bench mlaas`: what an advisor costs on the kernel's hot path.

Four tasks on one CPU yield to each other, so every trap is a context
switch and every switch asks the scheduler for the next task.  Measured in
one run: switches per second with no advisor, and with the `noop` module
attached (asked at every dispatch and time slice, always deferring).  The
difference per switch is the advisor's cost; the target is under 30% of a
context switch.  The runs alternate, and the figures are those of the pair
with the median ratio, so a noisy neighbour on the host skews neither side.

Isolated modules (`kernel.mlaas.isolated`) are measured on their own, against
the same advisor called in this process: one question round trip (`rr`'s
select_next over four tasks) and one notice when notices go in batches
(`lru`'s on_access).  Each figure is the median of a few timed runs.
"""

from __future__ import annotations

import os
import random
import statistics
import time
import types
from typing import Any

from bench.report import Figure
from kernel import Kernel
from kernel.mlaas import isolated, loader
from kernel.traps import Yield

TASKS = 4


def _yielder(n: int):
    def yielder(proc):
        trap = Yield()
        for _ in range(n):
            yield trap

    return yielder


def switches_per_second(n: int, module: str | None) -> float:
    k = Kernel(seed=0, cpus=1)
    try:
        if module is not None:
            k.mlaas.insmod(module)
        for i in range(TASKS):
            k.spawn(_yielder(n), name=f"yielder{i}")
        t0 = time.perf_counter()
        k.run()
        elapsed = time.perf_counter() - t0
        if module is not None:
            rec = k.mlaas.modules[module]
            if rec.state != "live":
                raise RuntimeError(f"the {module} module was ejected: {rec.report}")
        return k.cpus[0].switches / elapsed
    finally:
        k.shutdown()


class _Host:
    """The kernel's side of an isolated module, reduced to a clock."""

    def now_ns(self) -> int:
        return 0

    def log(self, level: str, event: str, fields: dict) -> None:
        pass

    def query(self, view: str, method: str, args: tuple) -> Any:
        raise LookupError(f"{view}.{method}")


class _View:
    """A task as a sched advisor sees it."""

    def __init__(self, pid: int) -> None:
        self.pid, self.name, self.argv, self.parent = pid, f"task{pid}", (f"task{pid}",), 1
        self.created_ns, self.cpu_ns, self.state, self.alive = 0, 0, "runnable", True


def _module_path(name: str) -> str:
    return os.path.join(loader.default_search_path()[0], f"{name}.py")


def _in_process(name: str) -> Any:
    loaded = loader.load(_module_path(name), lambda fn, *args: fn(*args))
    advisor = loaded.cls()
    advisor.ctx = types.SimpleNamespace(params=dict(loaded.cls.params), name=loaded.name)
    loader.forget(loaded.module)
    advisor.on_load()
    return advisor


def _ns_per_call(call: Any, n: int, trials: int) -> float:
    times = []
    for _ in range(trials):
        t0 = time.perf_counter_ns()
        call(n)
        times.append((time.perf_counter_ns() - t0) / n)
    return statistics.median(times)


def isolated_costs(quick: bool = False) -> list[Figure]:
    """ns per question round trip and per batched notice, isolated and in-process."""
    n_questions = 500 if quick else 3_000
    n_notices = 20_000 if quick else 100_000
    trials = 3 if quick else 5
    views = [_View(pid) for pid in (2, 3, 4, 5)]
    frames = [random.Random(0).randrange(64) for _ in range(1024)]

    def questions(advisor: Any) -> Any:
        def ask(n: int) -> None:
            select = advisor.select_next
            for _ in range(n):
                select(views, 0)

        return ask

    def notices(advisor: Any, flush: Any) -> Any:
        def notify(n: int) -> None:
            on_access = advisor.on_access
            for i in range(n):
                on_access(frames[i & 1023], 1, i)
            flush()

        return notify

    rr = isolated.start(_module_path("rr"), None, seed=0, host=_Host())
    lru = isolated.start(_module_path("lru"), None, seed=0, host=_Host())
    try:
        rr.advisor.on_load()
        lru.advisor.on_load()
        questions(rr.advisor)(100)  # warm both sides up
        question_ns = _ns_per_call(questions(rr.advisor), n_questions, trials)
        cpu_ns = rr.last_cpu_ns
        notice_ns = _ns_per_call(notices(lru.advisor, lru.flush), n_notices, trials)
    finally:
        rr.close()
        lru.close()
    local_rr, local_lru = _in_process("rr"), _in_process("lru")
    local_question_ns = _ns_per_call(questions(local_rr), n_questions * 10, trials)
    local_notice_ns = _ns_per_call(notices(local_lru, lambda: None), n_notices, trials)
    return [
        Figure("mlaas.isolated_question", question_ns, "ns/call", baseline=local_question_ns,
               baseline_name="in-process"),
        Figure("mlaas.isolated_question_child_cpu", cpu_ns, "ns/call"),
        Figure("mlaas.isolated_notice_batched", notice_ns, "ns/call", baseline=local_notice_ns,
               baseline_name="in-process"),
    ]  # fmt: skip


def run(quick: bool = False) -> list[Figure]:
    n = 10_000 if quick else 50_000
    trials = 3 if quick else 7
    pairs = []
    for _ in range(trials):  # interleaved pairs, so drift and neighbours hit both alike
        pairs.append((switches_per_second(n, None), switches_per_second(n, "noop")))
    pairs.sort(key=lambda p: p[1] / p[0])
    bare, noop = pairs[len(pairs) // 2]  # the pair with the median ratio
    switch_ns = 1e9 / bare
    advisor_ns = max(0.0, 1e9 / noop - switch_ns)
    return [
        Figure("mlaas.dispatch_noop_advisor", noop, "switches/s", baseline=bare,
               baseline_name="no advisor", target=">= 0.77x"),
        Figure("mlaas.noop_advisor_cost", advisor_ns, "ns/switch", baseline=switch_ns,
               baseline_name="a context switch", target="< 0.30x"),
        *isolated_costs(quick),
    ]  # fmt: skip

"""`malv bench mlaas`: what an advisor costs on the kernel's hot path.

Four tasks on one CPU yield to each other, so every trap is a context
switch and every switch asks the scheduler for the next task.  Measured in
one run: switches per second with no advisor, and with the `noop` module
attached (asked at every dispatch and time slice, always deferring).  The
difference per switch is the advisor's cost; the target is under 30% of a
context switch.  The runs alternate, and the figures are those of the pair
with the median ratio, so a noisy neighbour on the host skews neither side.
"""

from __future__ import annotations

import time

from bench.report import Figure
from kernel import Kernel
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
    ]  # fmt: skip

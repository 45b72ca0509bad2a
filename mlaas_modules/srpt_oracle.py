"""srpt_oracle: shortest-remaining-processing-time first, knowing the true runtimes.

The reference point of the sched experiment, not a policy a kernel can run:
it reads each job's true CPU time (in microseconds) from its last argument,
which only the experiment's job generator writes.  Tasks without one (the
job launcher, the shell) count as having nothing left, so they run at once.
"""

from kernel.mlaas import SchedAdvisor


def true_runtime_ns(task):
    if len(task.argv) < 2:
        return 0.0
    try:
        return float(task.argv[-1]) * 1e3
    except ValueError:
        return 0.0


class SrptOracle(SchedAdvisor):
    name = "srpt_oracle"
    budget_us = 1_000
    params = {"slice_ms": 1.0}

    def on_load(self) -> None:
        self.slice_ns = max(10_000, int(self.ctx.params["slice_ms"] * 1e6))

    def select_next(self, candidates, cpu):
        return min(candidates, key=lambda t: (max(0.0, true_runtime_ns(t) - t.cpu_ns), t.pid))

    def time_slice(self, task):
        return self.slice_ns

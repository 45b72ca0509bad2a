"""rr: round robin with a fixed time slice.

The runnable task that was dispatched least recently runs next, for
`slice_ms`.  It is the kernel's default policy written as a module: the
baseline of the sched experiment.
"""

from kernel.mlaas import SchedAdvisor


class RoundRobin(SchedAdvisor):
    name = "rr"
    budget_us = 500
    params = {"slice_ms": 5.0}

    def on_load(self) -> None:
        self.last_dispatch: dict[int, int] = {}
        self.ticket = 0
        self.slice_ns = max(10_000, int(self.ctx.params["slice_ms"] * 1e6))

    def select_next(self, candidates, cpu):
        last = self.last_dispatch
        choice = min(candidates, key=lambda t: (last.get(t.pid, -1), t.pid))
        self.ticket += 1
        last[choice.pid] = self.ticket
        return choice

    def time_slice(self, task):
        return self.slice_ns

    def on_exit(self, task, runtime_ns):
        self.last_dispatch.pop(task.pid, None)

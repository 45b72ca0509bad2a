"""learned_srpt: shortest-predicted-remaining-time-first, with a learned runtime predictor.

A task's total CPU time is predicted from its features — its program name
(one-hot, up to `names` distinct programs) and the log of its first numeric
argument (an input size) — by recursive least squares on the log of the
runtimes of the tasks that exited before it (an online regression; the
runtime model of MaLV-OS's learned scheduler).  The task with the least
predicted remaining time (prediction minus CPU time used) runs next.  A
task past its prediction is expected to need as long again as it has run
(heavy-tailed runtimes), and a program never seen exiting counts as short,
so new kinds of work and interactive tasks are not starved.
"""

import math

from kernel.mlaas import RecursiveLeastSquares, SchedAdvisor


def size_of(argv):
    for arg in argv:
        try:
            return max(0.0, float(arg))
        except ValueError:
            continue
    return 0.0


class LearnedSrpt(SchedAdvisor):
    name = "learned_srpt"
    budget_us = 1_000
    params = {"slice_ms": 1.0, "names": 16, "forgetting": 0.999}

    def on_load(self) -> None:
        p = self.ctx.params
        self.names = max(1, p["names"])
        self.index: dict[str, int] = {}
        self.model = RecursiveLeastSquares(self.names + 2, lam=p["forgetting"])
        self.seen: set[str] = set()  # programs with at least one exit observed
        self.predicted: dict[int, float] = {}  # pid -> predicted total ns
        self.slice_ns = max(10_000, int(p["slice_ms"] * 1e6))

    def features(self, task):
        x = [0.0] * (self.names + 2)
        x[0] = 1.0
        x[1] = math.log1p(size_of(task.argv))
        i = self.index.get(task.name)
        if i is None and len(self.index) < self.names:
            i = self.index[task.name] = len(self.index)
        x[2 + (i if i is not None else self.names - 1)] = 1.0
        return x

    def predict_total_ns(self, task):
        if task.name not in self.seen:
            return 0.0
        return math.exp(min(self.model.predict(self.features(task)), 50.0))

    def remaining_ns(self, task):
        total = self.predicted.get(task.pid)
        if total is None:
            total = self.predicted[task.pid] = self.predict_total_ns(task)
        used = task.cpu_ns
        return total - used if total > used else (used if total else 0.0)

    def on_spawn(self, task):
        self.predicted.pop(task.pid, None)

    def select_next(self, candidates, cpu):
        return min(candidates, key=lambda t: (self.remaining_ns(t), t.pid))

    def time_slice(self, task):
        return self.slice_ns

    def on_exit(self, task, runtime_ns):
        self.predicted.pop(task.pid, None)
        if runtime_ns > 0:
            self.model.update(self.features(task), math.log(runtime_ns))
            self.seen.add(task.name)

    def export_state(self):
        return {"index": dict(self.index), "seen": set(self.seen), "model": self.model}

    def import_state(self, state):
        if len(state["model"].w) == self.names + 2:
            self.index, self.seen, self.model = state["index"], state["seen"], state["model"]

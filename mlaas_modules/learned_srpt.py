"""learned_srpt: shortest-expected-remaining-time first, with a learned runtime model.

A task's CPU time is predicted from its features — its program name
(one-hot, up to `names` distinct programs) and the log of its first numeric
argument (an input size) — by an online regression: recursive least squares
on the log of the runtimes of the tasks that exited before it.  The
residuals give the spread of the prediction (an exponentially weighted RMS),
so the model predicts a log-normal runtime, not a single number.

The task with the least *expected remaining* time runs next: for a task
that has used `a` ns, E[S - a | S > a] under that log-normal.  A task that
outlives its prediction is therefore not starved, nor pushed ahead: its
expected remaining time grows the way a heavy tail says it should (the
SERPT rule; Harchol-Balter, "Performance Modeling and Design of Computer
Systems", ch. 33).  A program never seen exiting counts as short, so new
kinds of work and interactive tasks run at once.
"""

import math

from kernel.mlaas import RecursiveLeastSquares, SchedAdvisor

SQRT2 = math.sqrt(2.0)


def size_of(argv):
    for arg in argv:
        try:
            return max(0.0, float(arg))
        except ValueError:
            continue
    return 0.0


def upper_tail(z):
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / SQRT2)


def expected_remaining(mu, sigma, used):
    """E[S - used | S > used] for log S ~ N(mu, sigma^2)."""
    if used <= 0:
        return math.exp(mu + sigma * sigma / 2)
    z = (math.log(used) - mu) / sigma
    tail = upper_tail(z)
    if tail < 1e-12:  # far past the prediction: the log-normal's tail is ~ used * sigma^2 / z
        return used * sigma * sigma / max(z, 1e-6)
    return math.exp(mu + sigma * sigma / 2) * upper_tail(z - sigma) / tail - used


class LearnedSrpt(SchedAdvisor):
    name = "learned_srpt"
    budget_us = 1_000
    params = {"slice_ms": 1.0, "names": 16, "forgetting": 0.999}

    def on_load(self) -> None:
        p = self.ctx.params
        self.names = max(1, p["names"])
        self.index: dict[str, int] = {}
        self.model = RecursiveLeastSquares(self.names + 2, lam=p["forgetting"])
        self.sigma = 1.0  # spread of log runtime around the prediction, learned
        self.seen: set[str] = set()  # programs with at least one exit observed
        self.predicted: dict[int, float] = {}  # pid -> predicted mean of log runtime (ns)
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

    def remaining_ns(self, task):
        if task.name not in self.seen:
            return 0.0
        mu = self.predicted.get(task.pid)
        if mu is None:
            mu = self.predicted[task.pid] = self.model.predict(self.features(task))
        return expected_remaining(mu, self.sigma, task.cpu_ns)

    def on_spawn(self, task):
        self.predicted.pop(task.pid, None)

    def select_next(self, candidates, cpu):
        return min(candidates, key=lambda t: (self.remaining_ns(t), t.pid))

    def time_slice(self, task):
        return self.slice_ns

    def on_exit(self, task, runtime_ns):
        self.predicted.pop(task.pid, None)
        if runtime_ns <= 0:
            return
        x = self.features(task)
        y = math.log(runtime_ns)
        if self.model.updates:
            error = y - self.model.predict(x)
            self.sigma = max(0.05, math.sqrt(0.95 * self.sigma**2 + 0.05 * error * error))
        self.model.update(x, y)
        self.seen.add(task.name)

    def export_state(self):
        return {
            "index": dict(self.index),
            "seen": set(self.seen),
            "model": self.model,
            "sigma": self.sigma,
        }

    def import_state(self, state):
        if len(state["model"].w) == self.names + 2:
            self.index, self.seen, self.model = state["index"], state["seen"], state["model"]
            self.sigma = state["sigma"]

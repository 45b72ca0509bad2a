"""Hostile: sleeps in `select_next` before it answers, so its CPU time stays
tiny while the kernel waits.

It sleeps ``sleep_ms`` in every ``every``-th call (counted from the first),
then spins ``spin_ms`` of CPU time (none by default: the kernel has given up
on that answer by then), and answers the *last* candidate, which round robin
(the default) would not pick first, so the test can tell its answers from the
default's."""

import time

from kernel.mlaas import SchedAdvisor


class Dozes(SchedAdvisor):
    name = "dozes"
    params = {"sleep_ms": 900.0, "every": 1, "spin_ms": 0.0}

    def on_load(self):
        self.calls = 0

    def select_next(self, candidates, cpu):
        self.calls += 1
        if (self.calls - 1) % self.ctx.params["every"] == 0:
            time.sleep(self.ctx.params["sleep_ms"] / 1e3)
            end = time.thread_time() + self.ctx.params["spin_ms"] / 1e3
            while time.thread_time() < end:
                pass
        return candidates[-1]

"""A sched advisor that starts a thread running a loop of its own, in on_load or
in its first select_next (`start_in`), and then raises there if `then_raise`.
`started` lists the threads it started."""

import threading
import time

from adversary import HANG_S

from kernel.mlaas import SchedAdvisor


def spin(deadline):
    turns = 0
    while time.monotonic() < deadline:
        turns += 1
        time.sleep(0.001)


class LeaksThread(SchedAdvisor):
    name = "leaks_thread"
    params = {"start_in": "on_load", "then_raise": False}

    def on_load(self):
        self.started = []
        if self.ctx.params["start_in"] == "on_load":
            self._start()

    def _start(self):
        thread = threading.Thread(
            target=spin, args=(time.monotonic() + HANG_S,), name="leaks_thread", daemon=True
        )
        thread.start()
        self.started.append(thread.ident)

    def select_next(self, candidates, cpu):
        if self.ctx.params["start_in"] == "select_next" and not self.started:
            self._start()
        if self.ctx.params["then_raise"]:
            raise RuntimeError("leaving a thread behind")
        return None

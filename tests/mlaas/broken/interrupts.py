"""A sched advisor that raises KeyboardInterrupt or SystemExit (`exception`) in
select_next or in on_load (`where`): exceptions meant for the host, not the kernel."""

import sys

from kernel.mlaas import SchedAdvisor


def leave(exception):
    if exception == "SystemExit":
        sys.exit(3)
    raise KeyboardInterrupt


class Interrupts(SchedAdvisor):
    name = "interrupts"
    params = {"exception": "KeyboardInterrupt", "where": "select_next"}

    def on_load(self):
        if self.ctx.params["where"] == "on_load":
            leave(self.ctx.params["exception"])

    def select_next(self, candidates, cpu):
        if self.ctx.params["where"] == "select_next":
            leave(self.ctx.params["exception"])
        return None

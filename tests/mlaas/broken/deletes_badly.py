"""A sched advisor whose first time slice is a good int (2 ms) with a `__del__`
that goes off when the kernel lets go of it: it raises, exits or hangs as `how`
says.  Later slices are plain ints."""

from adversary import DelInt

from kernel.mlaas import SchedAdvisor


class DeletesBadly(SchedAdvisor):
    name = "deletes_badly"
    params = {"how": "raise"}

    def on_load(self):
        self.answered = False

    def time_slice(self, task):
        if self.answered:
            return 2_000_000
        self.answered = True
        return DelInt(2_000_000, self.ctx.params["how"])

"""A sched advisor that answers whatever the test puts in `answers` (default: garbage)."""

from kernel.mlaas import SchedAdvisor


class Garbage(SchedAdvisor):
    name = "garbage"

    def on_load(self):
        self.answers = ["not a task"]

    def select_next(self, candidates, cpu):
        return self.answers[0]

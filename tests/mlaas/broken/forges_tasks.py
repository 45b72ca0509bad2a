"""A sched advisor whose select_next answers with a task it was not given: what
the test puts in `forgery` (a real kernel Task, a copy of one, another kernel's
task or view), made from the candidates."""

from kernel.mlaas import SchedAdvisor


class ForgesTasks(SchedAdvisor):
    name = "forges_tasks"

    def on_load(self):
        self.forgery = None  # candidates -> the forged answer

    def select_next(self, candidates, cpu):
        return None if self.forgery is None else self.forgery(candidates)

"""A sched advisor that answers whatever the test tells it: `self.told[callback]`
makes each answer from the call's arguments (a lying int, a numpy value, an object
whose dunders go off, a copy of a task, ...)."""

from kernel.mlaas import SchedAdvisor


class AnswersAsToldSched(SchedAdvisor):
    name = "told_sched"

    def on_load(self):
        self.told = {}

    def _answer(self, callback, *args):
        make = self.told.get(callback)
        return None if make is None else make(*args)

    def select_next(self, candidates, cpu):
        return self._answer("select_next", candidates, cpu)

    def time_slice(self, task):
        return self._answer("time_slice", task)

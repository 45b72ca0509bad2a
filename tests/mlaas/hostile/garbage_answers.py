"""Hostile: answers with what the kernel cannot use.

`select_next` names a task it was not offered (a view it made itself);
`time_slice` returns an object that is not plain data."""

from kernel.mlaas import SchedAdvisor


class GarbageAnswers(SchedAdvisor):
    name = "garbage_answers"

    def select_next(self, candidates, cpu):
        return candidates[0]._replace(pid=999_999)

    def time_slice(self, task):
        return object()

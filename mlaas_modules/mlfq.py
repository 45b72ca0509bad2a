"""mlfq: the multi-level feedback queue (Corbató's, as in OSTEP ch. 8).

Rules: a higher level runs first; round robin within a level; a new task
starts at the top; a task that has used its allotment at a level moves down
one (whether or not it gave up the CPU on the way, so it cannot game the
scheduler); every `boost_ms` all tasks go back to the top, so none starves.
Level i's slice is `slice_ms` * 2**i and its allotment is four slices.
"""

from kernel.mlaas import SchedAdvisor


class Mlfq(SchedAdvisor):
    name = "mlfq"
    budget_us = 500
    params = {"levels": 3, "slice_ms": 2.0, "boost_ms": 500.0}

    def on_load(self) -> None:
        p = self.ctx.params
        self.levels = max(1, p["levels"])
        self.slices_ns = [max(10_000, int(p["slice_ms"] * 1e6 * 2**i)) for i in range(self.levels)]
        self.allotments_ns = [4 * s for s in self.slices_ns]
        self.boost_ns = int(p["boost_ms"] * 1e6)
        self.next_boost = self.ctx.now_ns + self.boost_ns
        self.level: dict[int, int] = {}
        self.entered_cpu: dict[int, int] = {}  # cpu_ns when the task entered its level
        self.last_dispatch: dict[int, int] = {}
        self.ticket = 0

    def _level_of(self, task) -> int:
        pid = task.pid
        level = self.level.get(pid)
        if level is None:
            self.level[pid] = level = 0
            self.entered_cpu[pid] = task.cpu_ns
        elif (
            level < self.levels - 1
            and task.cpu_ns - self.entered_cpu[pid] >= self.allotments_ns[level]
        ):
            level += 1
            self.level[pid] = level
            self.entered_cpu[pid] = task.cpu_ns
        return level

    def select_next(self, candidates, cpu):
        if self.ctx.now_ns >= self.next_boost:
            self.level.clear()
            self.next_boost = self.ctx.now_ns + self.boost_ns
        last = self.last_dispatch
        choice = min(candidates, key=lambda t: (self._level_of(t), last.get(t.pid, -1), t.pid))
        self.ticket += 1
        last[choice.pid] = self.ticket
        return choice

    def time_slice(self, task):
        return self.slices_ns[self.level.get(task.pid, 0)]

    def on_exit(self, task, runtime_ns):
        for table in (self.level, self.entered_cpu, self.last_dispatch):
            table.pop(task.pid, None)

"""A sched advisor that keeps every view the kernel hands it, and asks its
ctx.sched for more, to look for a way back to the kernel's own objects."""

from kernel.mlaas import SchedAdvisor


class CollectsViews(SchedAdvisor):
    name = "collects_views"

    def on_load(self):
        self.views = []  # every TaskView it was handed or found
        self.sequences = []  # every candidates sequence select_next was given

    def on_spawn(self, task):
        self.views.append(task)

    def select_next(self, candidates, cpu):
        self.sequences.append(candidates)
        self.views.extend(candidates)
        self.views.extend(self.ctx.sched.runnable())
        if len(candidates):
            self.views.append(self.ctx.sched.task(candidates[0].pid))
        return None

    def time_slice(self, task):
        self.views.append(task)
        return None

    def on_exit(self, task, runtime_ns):
        self.views.append(task)

"""learned_warmth: a learned page-warmth advisor, imitating Belady's OPT.

Belady's OPT evicts the page whose next use is furthest away.  This advisor
learns to predict that distance.  At every access it records a page's
features — the log of its last two reuse gaps (in accesses), the log of its
access count, whether the access continues a sequential run, whether it is
the page's first — and when the page is used again, the gap it waited is
the label of those features (a page not reused within a horizon of
`horizon` x memory size is labelled with the horizon).  Samples go to the
feature store; every `train_every` samples an MLP (5 -> hidden -> hidden ->
1, ReLU) takes an Adam step on a mini-batch drawn from it, and the trained
weights are published to the kernel's copy of the model.

To evict, it scores up to `sample` candidate pages in one batched `infer`
(the kernel runs it on the CPU or the vGPU by its crossover policy) and
evicts the page expected furthest from its next use: predicted gap minus
the time since its last access, or, for a page already past its predicted
reuse, as long again as it has been idle.  The same idea as LRB (Song et
al., NSDI '20) and Hawkeye (Jain & Lin, ISCA '16), on pages.
"""

import math
from collections import deque

import numpy as np

from kernel.mlaas import MemoryAdvisor, MlpTrainer

FEATURES = ("gap", "previous_gap", "count", "sequential", "first")


def log_gap(gap):
    return math.log2(1.0 + gap)


class LearnedWarmth(MemoryAdvisor):
    name = "learned_warmth"
    budget_us = 5_000  # an eviction scores up to `sample` pages with the model
    params = {
        "sample": 128,
        "horizon": 4.0,
        "hidden": 16,
        "lr": 0.003,
        "train_every": 16,
        "batch": 64,
        "warmup_steps": 20,
    }

    def on_load(self) -> None:
        p = self.ctx.params
        self.t = 0  # accesses seen: this advisor's clock
        self.horizon = max(16, int(p["horizon"] * self.ctx.memory.nframes))
        self.pages: dict[
            tuple[int, int], list
        ] = {}  # (pid, vpn) -> [t_last, gap, previous_gap, count, features]
        self.pending: deque = deque()  # (t, page) whose next reuse is not known yet
        self.last_vpn: dict[int, int] = {}
        self.model = self.ctx.model("reuse", (len(FEATURES), p["hidden"], p["hidden"], 1))
        self.trainer = MlpTrainer(self.model, lr=p["lr"])
        self.samples = self.ctx.features.create_registry(
            f"{self.name}.samples", (*FEATURES, "next_gap"), 4096
        )
        self.new_samples = 0

    # -- learning -----------------------------------------------------------------

    def _label(self, features, gap):
        self.samples.capture([*features, log_gap(min(gap, self.horizon))])
        self.new_samples += 1
        if self.new_samples >= self.ctx.params["train_every"]:
            self.new_samples = 0
            self._train()

    def _train(self):
        data = self.samples.latest(1024).values
        batch = min(self.ctx.params["batch"], len(data))
        rows = data[self.ctx.rng.sample(range(len(data)), batch)]
        self.trainer.step(rows[:, :-1], rows[:, -1:])
        if self.trainer.steps % 4 == 0:
            self.ctx.load_weights(self.model, self.trainer.weights())

    def on_access(self, frame, pid, vpn):
        self.t = t = self.t + 1
        key = (pid, vpn)
        info = self.pages.get(key)
        if info is None:
            gap, previous, count, first = self.horizon, self.horizon, 0, 1.0
        else:
            gap = t - info[0]
            self._label(info[4], gap)
            previous, count, first = info[1], info[3], 0.0
        sequential = 1.0 if self.last_vpn.get(pid) == vpn - 1 else 0.0
        self.last_vpn[pid] = vpn
        features = (
            log_gap(min(gap, self.horizon)),
            log_gap(min(previous, self.horizon)),
            math.log2(1.0 + count),
            sequential,
            first,
        )
        self.pages[key] = [t, gap, previous, count + 1, features]
        self.pending.append((t, key))
        self._expire(t)

    def _expire(self, now):
        """Pages not reused within the horizon are labelled with it (censored samples)."""
        pending = self.pending
        limit = now - self.horizon
        while pending and pending[0][0] < limit:
            t, key = pending.popleft()
            info = self.pages.get(key)
            if info is not None and info[0] == t:
                self._label(info[4], self.horizon)
                del self.pages[key]  # idle past the horizon: as cold as a page never seen

    def on_launch(self, pid, program):
        self.last_vpn.pop(pid, None)

    # -- eviction -----------------------------------------------------------------

    def select_victim(self, candidates):
        owner = self.ctx.memory.owner
        n = min(self.ctx.params["sample"], len(candidates))
        picks = candidates if n == len(candidates) else self.ctx.rng.sample(candidates, n)
        known, rows, idle = [], [], []
        for frame in picks:
            info = self.pages.get(owner(frame))
            if info is None:
                return frame  # not accessed within the horizon (or a prefetch never used): coldest
            known.append(frame)
            rows.append(info[4])
            idle.append(self.t - info[0])
        idle = np.asarray(idle, np.float64)
        if self.trainer.steps < self.ctx.params["warmup_steps"]:
            return known[int(np.argmax(idle))]  # untrained: least recently used of the sample
        predicted = (
            np.exp2(self.ctx.infer(self.model, rows).result()[:, 0].astype(np.float64)) - 1.0
        )
        remaining = predicted - idle
        overdue = remaining < 0
        remaining[overdue] = idle[overdue]
        return known[int(np.argmax(remaining))]

    def export_state(self):
        return {
            "t": self.t,
            "pages": self.pages,
            "pending": self.pending,
            "trainer": self.trainer,
            "last_vpn": self.last_vpn,
        }

    def import_state(self, state):
        self.t, self.pages, self.pending = state["t"], state["pages"], state["pending"]
        self.last_vpn = state["last_vpn"]
        old = state["trainer"]
        if old.model.layers == self.model.layers:
            self.trainer = MlpTrainer(self.model, lr=self.ctx.params["lr"])
            self.trainer.params, self.trainer._m, self.trainer._v = old.params, old._m, old._v
            self.trainer.steps = old.steps
            self.ctx.load_weights(self.model, self.trainer.weights())

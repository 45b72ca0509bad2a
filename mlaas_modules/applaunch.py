"""applaunch: an app-launch predictor that prefetches the next program's pages.

Phone and desktop systems preload the app a user is likely to open next
(e.g. Parate et al., "Practical prediction and prefetch for faster access to
applications on mobile phones", UbiComp '13).  This advisor keeps a
first-order Markov chain over program launches.  A launch is a task becoming
active: its first page fault after another task's (a newly started task's
first fault, or a long-lived app brought back to the front).  At each launch of program A it predicts the program B
that most often followed A (at least `min_seen` times, and in at least
`min_share` of A's launches) and, if B has a live task, queues B's pages
that are out in swap — the ones B touched when last active — as a
prefetch.  Those are another task's pages, so the kernel loads them in the
background while A runs, and B finds them resident when it is launched.
Eviction takes the same view: pages of the running app and of the predicted
next one are kept, the others go first (unreferenced ones before referenced).
"""

from collections import Counter, defaultdict

from kernel.mlaas import MemoryAdvisor


class AppLaunch(MemoryAdvisor):
    name = "applaunch"
    budget_us = 2_000  # an eviction may sweep every frame
    params = {"min_seen": 2, "min_share": 0.5, "max_pages": 256}

    def on_load(self) -> None:
        self.transitions: dict[str, Counter] = defaultdict(Counter)
        self.pid_of: dict[str, int] = {}  # program -> its most recent task
        self.program_of: dict[int, str] = {}
        self.working_set: dict[int, set[int]] = defaultdict(set)  # pid -> pages it faulted on
        self.active_pid = 0
        self.last_program = ""
        self.queued: list[tuple[int, int]] = []
        self.launches = 0
        self.predictions = 0
        self.predicted_pid = 0
        self.hand = 0

    def predict(self, program):
        """The program most likely launched after `program`, or None."""
        after = self.transitions.get(program)
        if not after:
            return None
        nxt, seen = after.most_common(1)[0]
        if seen < self.ctx.params["min_seen"] or seen < self.ctx.params["min_share"] * sum(
            after.values()
        ):
            return None
        return nxt

    def _launched(self, pid, program):
        self.launches += 1
        if self.last_program:
            self.transitions[self.last_program][program] += 1
        self.last_program = program
        self.active_pid = pid
        nxt = self.predict(program)
        target = self.pid_of.get(nxt) if nxt is not None else None
        self.predicted_pid = target or 0
        if target is None or target == pid:
            return
        swapped = set(self.ctx.memory.swapped_pages(target)) & self.working_set[target]
        pages = sorted(swapped)[: self.ctx.params["max_pages"]]
        if pages:
            self.predictions += 1
            self.queued = [(target, vpn) for vpn in pages]

    def select_victim(self, candidates):
        """Evict from apps that are neither running nor predicted next, unreferenced
        pages first, sweeping like CLOCK; None (the kernel's CLOCK) if only those are left."""
        keep = (self.active_pid, self.predicted_pid)
        mem = self.ctx.memory
        n = len(candidates)
        start = self.hand % n
        fallback = None
        for i in range(n):
            frame = candidates[(start + i) % n]
            owner = mem.owner(frame)
            if owner is None or owner[0] in keep:
                continue
            if not mem.referenced(frame):
                self.hand = start + i + 1
                return frame
            if fallback is None:
                fallback = frame
        return fallback

    def on_launch(self, pid, program):
        self.pid_of[program] = pid
        self.program_of[pid] = program
        self.working_set.pop(pid, None)

    def on_fault(self, pid, vpn, major):
        self.working_set[pid].add(vpn)
        if pid != self.active_pid:
            program = self.program_of.get(pid)
            if program is not None:
                self._launched(pid, program)

    def prefetch(self, pid, vpn):
        if not self.queued:
            return None
        pages, self.queued = self.queued[:32], self.queued[32:]
        return pages

"""CPU scheduling with sched_ext-style dispatch queues.

Runnable tasks sit in dispatch queues (DSQs): one local DSQ per CPU, one
global DSQ, and any number of custom FIFO or vtime-ordered DSQs a policy
creates.  A CPU looking for work takes its local DSQ first, then asks the
policy to `dispatch` into it.  The built-in policy is round robin over the
global FIFO with a fixed time slice.

The advisor hook: when a sched advisor is attached, `pick_next` asks it to
choose among the runnable tasks (a live `RunnableTasks` sequence) and
`time_slice` asks it for the slice.  An advisor that raises or answers with a
task that is not runnable is reported to `on_advisor_fault` (the MLaaS
subsystem ejects it) and the default policy decides instead, so no task is
lost.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from kernel.task import State, Task

DEFAULT_SLICE_NS = 5_000_000  # 5 ms, as Linux's CFS base slice order of magnitude

GLOBAL_DSQ = "global"


class FifoDsq:
    kind = "fifo"

    def __init__(self, name: str) -> None:
        self.name = name
        self._q: deque[Task] = deque()

    def push(self, task: Task) -> None:
        self._q.append(task)

    def pop(self) -> Task | None:
        return self._q.popleft() if self._q else None

    def remove(self, task: Task) -> bool:
        try:
            self._q.remove(task)
            return True
        except ValueError:
            return False

    def __len__(self) -> int:
        return len(self._q)

    def __iter__(self) -> Iterator[Task]:
        return iter(self._q)


class VtimeDsq:
    """Ordered by `task.vtime` (ties: insertion order), as scx's vtime DSQs."""

    kind = "vtime"

    def __init__(self, name: str) -> None:
        self.name = name
        self._heap: list[tuple[int, int, Task]] = []
        self._seq = 0

    def push(self, task: Task) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (task.vtime, self._seq, task))

    def pop(self) -> Task | None:
        return heapq.heappop(self._heap)[2] if self._heap else None

    def remove(self, task: Task) -> bool:
        for i, entry in enumerate(self._heap):
            if entry[2] is task:
                self._heap.pop(i)
                heapq.heapify(self._heap)
                return True
        return False

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[Task]:
        return (entry[2] for entry in sorted(self._heap, key=lambda e: (e[0], e[1])))


class RunnableTasks:
    """A live, read-only sequence of the runnable tasks: what `select_next`
    chooses among.  Nothing is copied until the advisor looks, so an advisor
    that defers costs the dispatch path almost nothing."""

    __slots__ = ("_sched",)

    def __init__(self, sched: Scheduler) -> None:
        self._sched = sched

    def __len__(self) -> int:
        return len(self._sched.where)

    def __iter__(self) -> Iterator[Task]:
        return iter(self._sched.runnable())

    def __getitem__(self, index: Any) -> Any:
        return self._sched.runnable()[index]


class Scheduler:
    """Owns the DSQs.  The default policy is round robin on the global DSQ."""

    def __init__(self, ncpus: int, slice_ns: int = DEFAULT_SLICE_NS) -> None:
        self.slice_ns = slice_ns
        self.local = [FifoDsq(f"local{c}") for c in range(ncpus)]
        self.dsqs: dict[str, FifoDsq | VtimeDsq] = {GLOBAL_DSQ: FifoDsq(GLOBAL_DSQ)}
        self.advisor: Any = None
        self.on_advisor_fault: Callable[[Any, str, str], None] | None = None
        self.where: dict[int, FifoDsq | VtimeDsq] = {}  # pid -> the DSQ holding it
        self.candidates = RunnableTasks(self)

    # -- queues ---------------------------------------------------------------

    def create_dsq(self, name: str, kind: str = "fifo") -> FifoDsq | VtimeDsq:
        if name in self.dsqs:
            raise ValueError(f"dispatch queue {name!r} exists")
        if kind not in ("fifo", "vtime"):
            raise ValueError(f"unknown dispatch queue kind {kind!r} (fifo or vtime)")
        dsq = FifoDsq(name) if kind == "fifo" else VtimeDsq(name)
        self.dsqs[name] = dsq
        return dsq

    def insert(self, task: Task, dsq: FifoDsq | VtimeDsq) -> None:
        task.state = State.RUNNABLE
        dsq.push(task)
        self.where[task.pid] = dsq

    def enqueue(self, task: Task) -> None:
        """A task became runnable.  Round robin: the tail of the global FIFO."""
        self.insert(task, self.dsqs[GLOBAL_DSQ])

    def dequeue(self, task: Task) -> None:
        dsq = self.where.pop(task.pid, None)
        if dsq is not None:
            dsq.remove(task)

    def runnable(self) -> list[Task]:
        out: list[Task] = []
        for local in self.local:
            out.extend(local._q)  # the deque itself: this runs at every advised dispatch
        for dsq in self.dsqs.values():
            out.extend(dsq._q if isinstance(dsq, FifoDsq) else dsq)
        return out

    def has_waiting(self, cpu: int) -> bool:
        return bool(self.local[cpu]) or any(len(d) for d in self.dsqs.values())

    # -- decisions --------------------------------------------------------------

    def pick_next(self, cpu: int) -> Task | None:
        advisor = self.advisor
        if advisor is not None and self.where:
            # Asked at every dispatch, so written out here rather than in a helper.
            select = getattr(advisor, "select_next", None)
            if select is not None:
                try:
                    choice = select(self.candidates, cpu)
                except Exception as exc:  # an advisor that is not guarded by the MLaaS core
                    self._fault("raised", f"select_next raised {type(exc).__name__}")
                    choice = None
                if choice is not None and self._take(choice):
                    return choice
        task = self.local[cpu].pop()
        if task is None:
            task = self.dsqs[GLOBAL_DSQ].pop()
            if task is None:
                for dsq in self.dsqs.values():
                    task = dsq.pop()
                    if task is not None:
                        break
        if task is not None:
            self.where.pop(task.pid, None)
        return task

    def time_slice(self, task: Task) -> int:
        if self.advisor is not None and hasattr(self.advisor, "time_slice"):
            try:
                ns = self.advisor.time_slice(task)
            except Exception as exc:  # the advisor's fault, not the kernel's
                self._fault("raised", f"time_slice raised {type(exc).__name__}")
                return self.slice_ns
            if ns is not None and not getattr(self.advisor, "answers_checked", False):
                ns = self._checked("time_slice", ns, task)
            return self.slice_ns if ns is None else ns
        return self.slice_ns

    def _take(self, choice: Any) -> bool:
        """Take the advisor's choice off its dispatch queue.  It must be one of
        this scheduler's own runnable tasks: a DSQ removes a task by identity,
        so a copy of a task, or another kernel's, is not found there."""
        dsq = self.where.get(choice.pid) if type(choice) is Task else None
        if dsq is None or choice.state is not State.RUNNABLE or not dsq.remove(choice):
            self._fault("invalid", "select_next chose something that is not a runnable task")
            return False
        del self.where[choice.pid]
        return True

    def _checked(self, callback: str, answer: Any, *args: Any) -> Any:
        """An unguarded advisor's answer (one set here by hand, not an MLaaS
        binding, whose answers the guard checked) meets the same rule, its
        row's in the MLaaS callback table; None if it does not."""
        from kernel.mlaas.advisors import CALLBACK_TABLE
        from kernel.mlaas.faults import InvalidAnswer

        try:
            return CALLBACK_TABLE[callback].check(answer, *args)
        except InvalidAnswer as exc:
            self._fault("invalid", str(exc))
            return None

    def _fault(self, kind: str, message: str) -> None:
        advisor = self.advisor
        if self.on_advisor_fault is not None:
            self.on_advisor_fault(advisor, kind, message)
        else:
            self.advisor = None

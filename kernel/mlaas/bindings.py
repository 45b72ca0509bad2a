"""Bindings: what the scheduler, the memory manager and the vGPU driver call
when an advisor is attached.

The kernel's hook points (`Scheduler.advisor`, `MemoryManager.policy` and
its notice hooks, `Mlaas.gpu`) speak in kernel objects.  A binding stands in
those slots and translates: tasks become `TaskView`s, address spaces become
pids.  Every call into the module goes through the core's guard
(`Mlaas.ask`), which also turns the answer into plain values (`answers.py`)
before the binding checks it against this kernel's own tables.

A binding only has the methods its module overrides (sched_ext calls only
the ops a scheduler defines): the hook points test for them with
``getattr``, so an advisor without `select_next` costs the scheduler nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from time import thread_time_ns
from typing import TYPE_CHECKING, Any

from kernel.memory import SWAP_IO_NS
from kernel.mlaas.advisors import (  # noqa: F401  (the limits are read from here too)
    CALLBACK_TABLE,
    MAX_CONTEXTS,
    MAX_PREFETCH_PAGES,
    MAX_SLICE_NS,
    MIN_SLICE_NS,
)
from kernel.mlaas.answers import plain_str
from kernel.mlaas.context import TaskView
from kernel.mlaas.context import _source as context_source
from kernel.mlaas.faults import HostInterrupt, InvalidAnswer, describe_value, guard, settle
from kernel.task import State

if TYPE_CHECKING:
    from kernel.memory import AddressSpace, MemoryManager
    from kernel.mlaas.core import Mlaas, ModuleRecord
    from kernel.task import Task

FAULTED = object()  # what `Mlaas.ask` returns when the module was ejected


def checked(name: str, args: tuple[Any, ...]) -> Callable[[Any], Any]:
    """The answer check `Mlaas.ask` runs for callback `name` asked with `args`:
    its row's validator (`advisors.CALLBACK_TABLE`), the only one."""
    check = CALLBACK_TABLE[name].check
    return lambda answer: check(answer, *args)


def ask_callback(core: Mlaas, rec: ModuleRecord, name: str, *args: Any) -> Any:
    """Ask `rec`'s callback `name` under the guard, its answer checked by its
    row; None where the module has no opinion or was ejected (the caller then
    takes its default).  The module is handed its own copy of each list, so
    the check reads the kernel's, which the module cannot have changed."""
    given = tuple(list(a) if type(a) is list else a for a in args)
    answer = core.ask(rec, rec.methods[name], given, checked(name, args))
    return None if answer is FAULTED else answer


def advise(core: Mlaas, name: str, *args: Any) -> Any:
    """The attached advisor's checked answer to callback `name`, or None (no
    advisor of its kind, the callback not overridden, no opinion, or a fault).
    The one wrapper a new callback's caller needs; `args` are what the
    module is given."""
    rec = core.attached.get(CALLBACK_TABLE[name].kind)
    if rec is None or name not in rec.overridden:
        return None
    return ask_callback(core, rec, name, *args)


class MemoryBinding:
    """Stands in `MemoryManager.policy` and its notice hooks."""

    #: Its answers were checked by the guard (their rows' validators): the
    #: memory manager does not check them again.
    answers_checked = True

    def __init__(self, core: Mlaas, record: ModuleRecord, default: Any) -> None:
        self.core = core
        self.record = record
        self.name = record.name
        self.default = default  # the kernel's own policy (CLOCK), for "no opinion"
        has = record.overridden.__contains__
        if has("select_victim"):
            self.select_victim = self._select_victim
        if has("prefetch"):
            self.prefetch = self._prefetch
        self.on_access = self._on_access if has("on_access") else None
        self.on_fault = self._on_fault if has("on_fault") else None
        self.on_evict = self._on_evict if has("on_evict") else None
        self.wants_launch = has("on_launch")
        self.background: deque[tuple[AddressSpace, int]] = deque()
        self._draining: Any = None
        self._mm: MemoryManager | None = None

    def bind(self, mm: MemoryManager) -> None:
        self._mm = mm
        mm.policy = self
        mm.on_policy_fault = self.core.kernel_reported_fault
        mm.access_hook = self.on_access
        mm.fault_hook = self.on_fault
        mm.evict_hook = self.on_evict

    def close(self) -> None:
        """Nothing of the module is held here (its callbacks are looked up per call)."""

    def unbind(self, mm: MemoryManager) -> None:
        if mm.policy is self:
            mm.policy = self.default
        mm.access_hook = mm.fault_hook = mm.evict_hook = None
        self.background.clear()
        if self._draining is not None:
            self._draining.cancel()
            self._draining = None

    def _drain(self, _arg: Any = None) -> None:
        """Background prefetch: one page per swap-device I/O time, while any are queued."""
        self._draining = None
        mm = self._mm
        kernel = self.core.kernel
        while self.background and mm is not None and not kernel.halted:
            aspace, vpn = self.background.popleft()
            if aspace.table and mm.prefetch_page(aspace, vpn):
                self._draining = kernel.loop.call_later(SWAP_IO_NS, self._drain, owner=kernel)
                return

    # -- answers ------------------------------------------------------------------

    def _select_victim(self, mm: MemoryManager, candidates: list[int]) -> int:
        answer = ask_callback(self.core, self.record, "select_victim", candidates)
        return self.default.select_victim(mm, candidates) if answer is None else answer

    def _prefetch(
        self, mm: MemoryManager, aspace: AddressSpace, vpn: int
    ) -> list[tuple[AddressSpace, int]]:
        rec = self.record
        answer = ask_callback(self.core, rec, "prefetch", aspace.pid, vpn)
        if not answer:
            return []
        pages = self._pages(aspace, answer)
        if self.background and self._draining is None and rec.state == "live":
            kernel = self.core.kernel
            self._draining = kernel.loop.call_later(SWAP_IO_NS, self._drain, owner=kernel)
        return pages

    def _pages(
        self, aspace: AddressSpace, answer: list[int | tuple[int, int]]
    ) -> list[tuple[AddressSpace, int]]:
        tasks = self.core.kernel.tasks
        pages = []
        for item in answer:
            if isinstance(item, int):
                pages.append((aspace, item))
                continue
            pid, page = item
            task = tasks.get(pid)
            if task is None or task.aspace is None:
                continue
            if task.aspace is aspace:
                pages.append((aspace, page))
            else:  # another task's page: the faulting task need not wait for it
                self.background.append((task.aspace, page))
        return pages

    # -- notices --------------------------------------------------------------------

    def _on_access(self, aspace: AddressSpace, vpn: int, frame: int) -> None:
        rec = self.record
        self.core.ask(rec, rec.methods["on_access"], (frame, aspace.pid, vpn))

    def _on_fault(self, aspace: AddressSpace, vpn: int, major: bool) -> None:
        rec = self.record
        self.core.ask(rec, rec.methods["on_fault"], (aspace.pid, vpn, major))

    def _on_evict(self, aspace: AddressSpace, vpn: int, frame: int) -> None:
        rec = self.record
        self.core.ask(rec, rec.methods["on_evict"], (frame, aspace.pid, vpn))


class Candidates:
    """The runnable tasks as `TaskView`s, for one `select_next` call.

    One object per binding, reused: the list of views is built only if the
    module looks at it, so an advisor that defers pays for none of it.  Valid
    during the call it was passed to.  Like the views, it names its kernel
    only by the module's context key.
    """

    __slots__ = ("_key", "_views")

    def __init__(self, key: int) -> None:
        self._key = key
        self._views: list[TaskView] | None = None

    def _list(self) -> list[TaskView]:
        views = self._views
        if views is None:
            kernel = context_source(self._key).kernel
            view_of = kernel.mlaas.view_of
            views = self._views = [view_of(t) for t in kernel.sched.runnable()]
        return views

    def __len__(self) -> int:
        return len(self._list())

    def __iter__(self) -> Any:
        return iter(self._list())

    def __getitem__(self, index: Any) -> Any:
        return self._list()[index]

    def __contains__(self, item: Any) -> bool:
        return item in self._list()

    def __repr__(self) -> str:
        return f"Candidates({self._list()!r})"


class SchedBinding:
    """Stands in `Scheduler.advisor`."""

    #: Its answers were checked by the guard: the scheduler does not check them again.
    answers_checked = True

    def __init__(self, core: Mlaas, record: ModuleRecord) -> None:
        self.core = core
        self.record = record
        self.name = record.name
        has = record.overridden.__contains__
        self._select_advisor = has("select_next")
        if has("time_slice"):
            self.time_slice = self._time_slice
        self.wants_spawn = has("on_spawn")
        self.wants_exit = has("on_exit")

    def bind(self, sched: Any) -> None:
        if self._select_advisor:
            self.select_next, self._close = _select_next_guard(
                self.core, self.record, Candidates(self.record.key)
            )
        sched.advisor = self
        sched.on_advisor_fault = self.core.kernel_reported_fault

    def unbind(self, sched: Any) -> None:
        if sched.advisor is self:
            sched.advisor = None

    def close(self) -> None:
        """Drop the hot-path guard's reference to the module's callback."""
        close = getattr(self, "_close", None)
        if close is not None:
            close()

    def _time_slice(self, task: Task) -> int | None:
        return ask_callback(self.core, self.record, "time_slice", self.core.view_of(task))


def _select_next_guard(core: Mlaas, rec: ModuleRecord, candidates: Candidates) -> Any:
    """`select_next` for the scheduler: the hot path, one call per dispatch,
    and the function that lets go of the module's callback.

    This is `Mlaas.ask` written out as a closure (its variables are cells,
    cheaper to reach than attributes); keep the two in step.
    """
    select: Callable[..., Any] | None = rec.methods["select_next"]
    chosen_pid = CALLBACK_TABLE["select_next"].check
    slot = rec.slot
    isolated = rec.isolated
    watchdog = core.watchdog
    tasks = core.kernel.tasks
    sched = core.kernel.sched
    calls = 0

    def counter() -> int:
        return calls

    rec.counters.append(counter)

    @guard
    def select_next(runnable: Any, cpu: int) -> Task | None:
        nonlocal calls
        if watchdog.timer is None:
            watchdog.arm()
        candidates._views = None
        calls += 1
        timed = not calls & rec.sample_mask  # others are calls the budget check skips (faults.py)
        t0 = thread_time_ns() if timed else 0
        failure = None
        slot.call = calls
        try:
            try:
                answer = select(candidates, cpu)  # type: ignore[misc]
                pid = None if answer is None else chosen_pid(answer, candidates, cpu)
                answer = None  # released under the guard
            except HostInterrupt:
                slot.call = 0
                raise
            except BaseException as exc:
                failure = core.fault_of(rec, exc, "select_next")
                pid = None
        finally:
            slot.call = 0  # the answer, and whatever the module raised, were released above
        if failure is not None:
            settle(slot)
            core.eject(rec, *failure)
            return None
        if timed:
            if isolated is None:
                used = thread_time_ns() - t0
            else:  # the child's own measure, not the kernel's waiting (as in `Mlaas.ask`)
                used, isolated.last_cpu_ns = isolated.last_cpu_ns, 0
            if core.timed(rec, used, "select_next"):
                return None
        if pid is None:
            return None
        task = tasks.get(pid)  # this kernel's own table: a view names a task by its pid
        if task is None or task.state is not State.RUNNABLE or pid not in sched.where:
            core.eject(rec, "invalid", f"select_next chose pid {pid}, which is not runnable")
            return None
        return task

    def close() -> None:
        nonlocal select
        select = None

    return select_next, close


def _policy_name(answer: Any) -> str | None:
    if answer is None:
        return None
    if not issubclass(type(answer), str):
        raise InvalidAnswer(f"sharing_policy is {describe_value(answer)}, not a policy name")
    return plain_str(answer, "sharing_policy")


def _read_sharing_policy(advisor: Any) -> Any:
    return getattr(advisor, "sharing_policy", None)


class GpuAdvice:
    """What the vGPU driver asks the attached GPU and power advisors.

    Each method returns the advisor's checked answer, or None — no advisor,
    no opinion, or a fault (the advisor is then ejected) — and the driver
    decides by its own default.  Contexts are ints or objects with `.ctx`;
    `device.clocks_mhz` lists the clocks the device can run at.
    """

    def __init__(self, core: Mlaas) -> None:
        self.core = core

    def _invalid(self, rec: ModuleRecord, message: str) -> None:
        self.core.eject(rec, "invalid", message)

    def tpc_allocation(self, contexts: list[Any], n_tpcs: int) -> dict[int, int] | None:
        """A TPC mask for each context id."""
        ids = [c if isinstance(c, int) else c.ctx for c in contexts]
        answer: dict[int, int] | None = advise(self.core, "tpc_allocation", ids, n_tpcs)
        return answer

    def sharing_policy(self) -> tuple[str, dict[str, Any]] | None:
        """The sharing mechanism the attached GPU advisor selects: its
        `sharing_policy` name and its insmod parameters (the mechanism's
        parameter set), or None.  The driver checks the name."""
        rec = self.core.attached.get("gpu")
        if rec is None:
            return None
        name = self.core.ask(rec, _read_sharing_policy, (rec.advisor,), _policy_name)
        if name is FAULTED or name is None:
            return None
        return name, dict(rec.params)

    def refuse_policy(self, message: str) -> None:
        """The driver cannot run the policy the GPU advisor selected: eject it."""
        rec = self.core.attached.get("gpu")
        if rec is not None:
            self._invalid(rec, message)

    def frequency(self, device: Any) -> int | None:
        """A clock in MHz, one of `device.clocks_mhz`."""
        answer: int | None = advise(self.core, "frequency", device)
        return answer

"""Bindings: what the scheduler and the memory manager call when an advisor is attached.

The kernel's hook points (`Scheduler.advisor`, `MemoryManager.policy` and
its notice hooks) speak in kernel objects.  A binding stands in those slots
and translates: tasks become `TaskView`s, address spaces become pids, and
answers are checked before the kernel sees them.  Every call into the module
goes through the core's guard (`Mlaas.call`), which times it on the host
clock, catches what it raises and ejects it on a fault.

A binding only has the methods its module overrides (sched_ext calls only
the ops a scheduler defines): the hook points test for them with
``getattr``, so an advisor without `select_next` costs the scheduler nothing.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Mapping
from itertools import islice
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

from kernel.memory import SWAP_IO_NS
from kernel.mlaas.advisors import BASES, MemoryAdvisor, SchedAdvisor, overrides
from kernel.mlaas.context import TaskView
from kernel.mlaas.faults import guard

if TYPE_CHECKING:
    from kernel.memory import AddressSpace, MemoryManager
    from kernel.mlaas.core import Mlaas, ModuleRecord
    from kernel.task import Task

#: At most this many pages are prefetched per fault.
MAX_PREFETCH_PAGES = 32
#: The time slices a sched advisor may grant.
MIN_SLICE_NS = 10_000
MAX_SLICE_NS = 10_000_000_000

FAULTED = object()  # what `Mlaas.call` returns when the module was ejected


class _Invalid:
    """A prefetch answer that is not a collection of pages."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer


def _member(ascending: list[int], value: int) -> bool:
    i = bisect_left(ascending, value)
    return i < len(ascending) and ascending[i] == value


class MemoryBinding:
    """Stands in `MemoryManager.policy` and its notice hooks."""

    def __init__(self, core: Mlaas, record: ModuleRecord, default: Any) -> None:
        self.core = core
        self.record = record
        self.name = record.name
        self.default = default  # the kernel's own policy (CLOCK), for "no opinion"
        adv = record.advisor
        cls = type(adv)
        if overrides(cls, MemoryAdvisor, "select_victim"):
            self.select_victim = self._select_victim
        if overrides(cls, MemoryAdvisor, "prefetch"):
            self.prefetch = self._prefetch
        self.on_access = self._on_access if overrides(cls, MemoryAdvisor, "on_access") else None
        self.on_fault = self._on_fault if overrides(cls, MemoryAdvisor, "on_fault") else None
        self.on_evict = self._on_evict if overrides(cls, MemoryAdvisor, "on_evict") else None
        self.wants_launch = overrides(cls, MemoryAdvisor, "on_launch")
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
                self._draining = kernel.loop.call_later(SWAP_IO_NS, self._drain)
                return

    # -- answers ------------------------------------------------------------------

    def _select_victim(self, mm: MemoryManager, candidates: list[int]) -> int:
        answer = self.core.call(self.record, self.record.advisor.select_victim, candidates)
        if answer is FAULTED or answer is None:
            return self.default.select_victim(mm, candidates)
        if (
            isinstance(answer, bool)
            or not isinstance(answer, int)
            or not _member(candidates, answer)
        ):
            self.core.eject(
                self.record,
                "invalid",
                f"select_victim returned {answer!r}, not one of the candidate frames",
            )
            return self.default.select_victim(mm, candidates)
        return answer

    def _prefetch_list(self, pid: int, vpn: int) -> Any:
        answer = self.record.advisor.prefetch(pid, vpn)
        if answer is None:
            return None
        if isinstance(answer, (str, bytes, dict)) or not isinstance(answer, Iterable):
            return _Invalid(answer)
        return list(islice(answer, MAX_PREFETCH_PAGES))

    def _prefetch(
        self, mm: MemoryManager, aspace: AddressSpace, vpn: int
    ) -> list[tuple[AddressSpace, int]]:
        answer = self.core.call(self.record, self._prefetch_list, aspace.pid, vpn)
        if answer is FAULTED or answer is None:
            return []
        if isinstance(answer, _Invalid):
            self.core.eject(
                self.record, "invalid", f"prefetch returned {answer.answer!r}, not a list of pages"
            )
            return []
        pages = self._pages(aspace, answer)
        if self.background and self._draining is None and self.record.state == "live":
            self._draining = self.core.kernel.loop.call_later(SWAP_IO_NS, self._drain)
        return pages

    def _pages(self, aspace: AddressSpace, answer: list[Any]) -> list[tuple[AddressSpace, int]]:
        tasks = self.core.kernel.tasks
        pages = []
        for item in answer:
            if isinstance(item, int) and not isinstance(item, bool):
                pages.append((aspace, item))
                continue
            if (isinstance(item, tuple) and len(item) == 2
                    and all(isinstance(v, int) and not isinstance(v, bool) for v in item)):  # fmt: skip
                task = tasks.get(item[0])
                if task is None or task.aspace is None:
                    continue
                if task.aspace is aspace:
                    pages.append((aspace, item[1]))
                else:  # another task's page: the faulting task need not wait for it
                    self.background.append((task.aspace, item[1]))
                continue
            self.core.eject(
                self.record,
                "invalid",
                f"prefetch returned {item!r}, not a vpn or a (pid, vpn) pair",
            )
            return []
        return pages

    # -- notices --------------------------------------------------------------------

    def _on_access(self, aspace: AddressSpace, vpn: int, frame: int) -> None:
        self.core.call(self.record, self.record.advisor.on_access, frame, aspace.pid, vpn)

    def _on_fault(self, aspace: AddressSpace, vpn: int, major: bool) -> None:
        self.core.call(self.record, self.record.advisor.on_fault, aspace.pid, vpn, major)

    def _on_evict(self, aspace: AddressSpace, vpn: int, frame: int) -> None:
        self.core.call(self.record, self.record.advisor.on_evict, frame, aspace.pid, vpn)


class Candidates:
    """The runnable tasks as `TaskView`s, for one `select_next` call.

    One object per binding, reused: the list of views is built only if the
    module looks at it, so an advisor that defers pays for none of it.  Valid
    during the call it was passed to.
    """

    __slots__ = ("_core", "_tasks", "_views")

    def __init__(self, core: Mlaas, tasks: Any) -> None:
        self._core = core
        self._tasks = tasks  # the scheduler's live RunnableTasks
        self._views: list[TaskView] | None = None

    def _list(self) -> list[TaskView]:
        views = self._views
        if views is None:
            cache = self._core.task_views
            view_of = self._core.view_of
            views = self._views = [cache.get(t.pid) or view_of(t) for t in self._tasks]
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

    def __init__(self, core: Mlaas, record: ModuleRecord) -> None:
        self.core = core
        self.record = record
        self.name = record.name
        cls = type(record.advisor)
        self._select_advisor = overrides(cls, SchedAdvisor, "select_next")
        if overrides(cls, SchedAdvisor, "time_slice"):
            self.time_slice = self._time_slice
        self.wants_spawn = overrides(cls, SchedAdvisor, "on_spawn")
        self.wants_exit = overrides(cls, SchedAdvisor, "on_exit")

    def bind(self, sched: Any) -> None:
        if self._select_advisor:
            self.select_next = _select_next_guard(
                self.core, self.record, Candidates(self.core, sched.candidates)
            )
        sched.advisor = self
        sched.on_advisor_fault = self.core.kernel_reported_fault

    def unbind(self, sched: Any) -> None:
        if sched.advisor is self:
            sched.advisor = None

    def _time_slice(self, task: Task) -> int | None:
        answer = self.core.call(
            self.record, self.record.advisor.time_slice, self.core.view_of(task)
        )
        if answer is FAULTED or answer is None:
            return None
        if (
            isinstance(answer, bool)
            or not isinstance(answer, int)
            or not MIN_SLICE_NS <= answer <= MAX_SLICE_NS
        ):
            self.core.eject(
                self.record, "invalid",
                f"time_slice returned {answer!r}, not an int of ns in [{MIN_SLICE_NS}, {MAX_SLICE_NS}]",
            )  # fmt: skip
            return None
        return answer


def _select_next_guard(core: Mlaas, rec: ModuleRecord, candidates: Candidates) -> Any:
    """`select_next` for the scheduler: the hot path, one call per dispatch.

    This is `Mlaas.call` written out as a closure (its variables are cells,
    cheaper to reach than attributes); keep the two in step.
    """
    select = rec.advisor.select_next
    slot = rec.slot
    watchdog = core.watchdog
    calls = 0

    def counter() -> int:
        return calls

    rec.counters.append(counter)

    @guard
    def select_next(tasks: Any, cpu: int) -> Task | None:
        nonlocal calls
        if watchdog.timer is None:
            watchdog.arm()
        candidates._views = None
        calls += 1
        timed = not calls & rec.sample_mask  # others are calls the budget check skips (faults.py)
        t0 = perf_counter_ns() if timed else 0
        slot.call = calls
        try:
            answer = select(candidates, cpu)
            slot.call = 0
        except KeyboardInterrupt:
            slot.call = 0
            raise
        except BaseException as exc:
            slot.call = 0
            core.failed(rec, exc, "select_next")
            return None
        if timed and core.timed(rec, perf_counter_ns() - t0, "select_next"):
            return None
        if answer is None:
            return None
        # The scheduler checks that the task is runnable and reports it if not.
        return answer._task if type(answer) is TaskView else answer

    return select_next


class GpuAdvice:
    """What the vGPU driver asks the attached GPU and power advisors.

    Each method returns the advisor's checked answer, or None — no advisor,
    no opinion, or a fault (the advisor is then ejected) — and the driver
    decides by its own default.  Contexts are ints or objects with `.ctx`;
    `device.clocks_mhz` lists the clocks the device can run at.
    """

    def __init__(self, core: Mlaas) -> None:
        self.core = core

    def _ask(self, kind: str, callback: str, *args: Any) -> tuple[ModuleRecord | None, Any]:
        rec = self.core.attached.get(kind)
        if rec is None or not overrides(rec.cls, BASES[kind], callback):
            return None, None
        answer = self.core.call(rec, getattr(rec.advisor, callback), *args)
        return (None, None) if answer is FAULTED or answer is None else (rec, answer)

    def _invalid(self, rec: ModuleRecord, message: str) -> None:
        self.core.eject(rec, "invalid", message)

    def tpc_allocation(self, contexts: list[Any], n_tpcs: int) -> dict[int, int] | None:
        """A TPC mask for each context id."""
        rec, answer = self._ask("gpu", "tpc_allocation", contexts, n_tpcs)
        if rec is None:
            return None
        ids = {c if isinstance(c, int) else c.ctx for c in contexts}
        full = (1 << n_tpcs) - 1
        if not isinstance(answer, Mapping):
            self._invalid(
                rec, f"tpc_allocation returned {answer!r}, not a mapping of context to mask"
            )
            return None
        for ctx, mask in answer.items():
            if ctx not in ids:
                self._invalid(
                    rec, f"tpc_allocation named context {ctx!r}, which was not asked about"
                )
                return None
            if isinstance(mask, bool) or not isinstance(mask, int) or mask <= 0 or mask & ~full:
                self._invalid(
                    rec,
                    f"tpc_allocation gave context {ctx} mask {mask!r}: "
                    f"a mask must name at least one of TPCs 0-{n_tpcs - 1} and no other",
                )
                return None
        return dict(answer)

    def sharing_policy(self) -> tuple[str, dict[str, Any]] | None:
        """The sharing mechanism the attached GPU advisor selects: its
        `sharing_policy` name and its insmod parameters (the mechanism's
        parameter set), or None.  The driver checks the name."""
        rec = self.core.attached.get("gpu")
        if rec is None:
            return None
        name = getattr(rec.advisor, "sharing_policy", None)
        if name is None:
            return None
        if not isinstance(name, str):
            self._invalid(rec, f"sharing_policy is {name!r}, not a policy name")
            return None
        return name, dict(rec.advisor.ctx.params)

    def refuse_policy(self, message: str) -> None:
        """The driver cannot run the policy the GPU advisor selected: eject it."""
        rec = self.core.attached.get("gpu")
        if rec is not None:
            self._invalid(rec, message)

    def atom_size(self, kernel: Any) -> int | None:
        """The target atom duration in ns, within [1 us, 1 s]."""
        rec, answer = self._ask("gpu", "atom_size", kernel)
        if rec is None:
            return None
        if not _int_in(answer, 1_000, 1_000_000_000):
            self._invalid(rec, f"atom_size returned {answer!r}, not an int of ns in [1 us, 1 s]")
            return None
        return answer

    def right_size(self, kernel: Any, n_tpcs: int) -> int | None:
        """How many TPCs the kernel should get, within [1, n_tpcs]."""
        rec, answer = self._ask("gpu", "right_size", kernel, n_tpcs)
        if rec is None:
            return None
        if not _int_in(answer, 1, n_tpcs):
            self._invalid(rec, f"right_size returned {answer!r}, not a TPC count in [1, {n_tpcs}]")
            return None
        return answer

    def frequency(self, device: Any) -> int | None:
        """A clock in MHz, one of `device.clocks_mhz`."""
        rec, answer = self._ask("power", "frequency", device)
        if rec is None:
            return None
        if (
            isinstance(answer, bool)
            or not isinstance(answer, int)
            or answer not in device.clocks_mhz
        ):
            lo, hi = min(device.clocks_mhz), max(device.clocks_mhz)
            self._invalid(
                rec, f"frequency returned {answer!r} MHz, not a clock of the device ({lo}-{hi} MHz)"
            )
            return None
        return answer


def _int_in(value: Any, lo: int, hi: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and lo <= value <= hi

"""Faults, exit reports and the host-clock watchdog of the MLaaS subsystem.

sched_ext's contract, carried over: a module can always be detached, and a
module that misbehaves is ejected with an *exit report* (kind, reason,
message, virtual time) while the kernel falls back to its default policy.

The faults and their reasons:

=================  ==========================================================
reason             what happened
=================  ==========================================================
``raised``         a callback raised an exception
``overrun``        a callback overran its host-clock budget three times in a
                   row, or ran ten times over it and the watchdog interrupted it
``invalid``        a callback answered something the kernel cannot use
``starved``        a runnable task waited past the starvation timeout
                   (`StarvationWatchdog`, in virtual time)
``reload-failed``  `reload` could not load the changed file (the old version
                   stays in: this report does not eject)
=================  ==========================================================

Budgets are enforced twice.  A callback that never returns cannot be ejected
after it returns: the `HostWatchdog` thread looks at every module's call in
progress every few milliseconds and, past its hard limit (ten times the
budget, at least 20 ms), raises `CallbackTimeout` inside it (CPython's
`PyThreadState_SetAsyncExc`, the mechanism behind a thread interrupt).  That
costs the hot path one store before and one after each call.  The budget
itself is checked on the host clock by the guard: on every call of a module
until it has kept to its budget `SETTLE_CALLS` times in a row, and then on
one call in `SAMPLE_EVERY` (two clock reads cost a sizeable share of a
context switch), back to every call at its first overrun.  The time lsmod
shows is the timed calls' total scaled to all calls.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import time
import types
import weakref
from typing import Any

import attrs

from kernel.errors import SyscallError

#: Consecutive over-budget calls (of those timed) that eject a module.
OVERRUN_STRIKES = 3
#: Every call of a module is timed until this many in a row kept to the budget;
#: after that one call in `SAMPLE_EVERY` is, until one overruns again.
SETTLE_CALLS = 256
SAMPLE_EVERY = 8
#: A call this many times over its budget is interrupted at once.
HARD_FACTOR = 10
#: ... but never sooner than this: host scheduling noise is not a fault.
MIN_HARD_LIMIT_NS = 20_000_000
#: Loading a module (its top-level code, `on_load`) gets this long.
LOAD_LIMIT_NS = 2_000_000_000
#: How often the watchdog thread looks.
WATCHDOG_PERIOD_S = 0.005


class ModuleError(SyscallError):
    """insmod, rmmod, reload or modinfo was refused; the message says why."""

    errno = "EMODULE"


class CallbackTimeout(BaseException):  # noqa: N818 - raised into module code, like KeyboardInterrupt
    """Raised by the watchdog inside a callback that ran past its hard limit.

    A BaseException, so that a module's ``except Exception`` cannot swallow it.
    """


@attrs.frozen
class ExitReport:
    """Why a module stopped advising (or, for reload-failed, why its update did not take)."""

    kind: str  # "fault", "unload", "reload", "reload-failed", "shutdown"
    reason: str  # see the table above; "rmmod", "reload", "shutdown" for clean exits
    message: str
    t_ns: int

    def line(self) -> str:
        return f"{self.kind} ({self.reason}) at {self.t_ns / 1e9:.6f} s: {self.message}"


def _async_raise(thread_id: int, exc_type: type[BaseException]) -> bool:
    n = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type)
    )
    return n == 1


class CallSlot:
    """The callback in progress on one module (or a module being loaded), as the
    watchdog sees it.

    The hot path only writes `call`: a nonzero id while a callback runs, 0
    after.  It reads no clock and records no thread: the watchdog times a call
    from the first poll that sees its id, and finds the thread whose stack is
    inside a guard of this slot (`GUARD_CODES`) only when it must interrupt.
    """

    __slots__ = ("call", "limit_ns", "seen_call", "seen_ns", "interrupted", "__weakref__")

    def __init__(self, limit_ns: int = 0) -> None:
        self.call = 0
        self.limit_ns = limit_ns  # the hard limit of one call
        self.seen_call = 0  # the watchdog's own bookkeeping
        self.seen_ns = 0
        self.interrupted = 0


#: Code objects of the functions that call into modules with a local `slot`.
GUARD_CODES: set[types.CodeType] = set()


def guard(fn: Any) -> Any:
    """Mark `fn` as a guard: it calls module code while its local `slot` is set."""
    GUARD_CODES.add(fn.__code__)
    return fn


def _thread_inside(slot: CallSlot) -> int | None:
    for thread, frame in sys._current_frames().items():
        f: types.FrameType | None = frame
        while f is not None:
            if f.f_code in GUARD_CODES and f.f_locals.get("slot") is slot:
                return thread
            f = f.f_back
    return None


class HostWatchdog:
    """One daemon thread for the process; it runs only while some slot is watched."""

    def __init__(self) -> None:
        self._slots: weakref.WeakSet[CallSlot] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, slot: CallSlot) -> None:
        with self._lock:
            self._slots.add(slot)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="mlaas-watchdog", daemon=True
                )
                self._thread.start()

    def unwatch(self, slot: CallSlot) -> None:
        with self._lock:
            self._slots.discard(slot)

    def _run(self) -> None:
        while True:
            time.sleep(WATCHDOG_PERIOD_S)
            with self._lock:
                slots = list(self._slots)
                if not slots:
                    self._thread = None
                    return
            now = time.perf_counter_ns()
            for slot in slots:
                current = slot.call
                if current != slot.seen_call:  # a new call (or none): start timing it
                    slot.seen_call, slot.seen_ns = current, now
                    continue
                if not current or now - slot.seen_ns <= slot.limit_ns:
                    continue
                thread = _thread_inside(slot)
                # Re-read before raising: the call may have returned meanwhile.
                if thread is not None and slot.call == current:
                    slot.interrupted += 1
                    slot.seen_call = 0
                    _async_raise(thread, CallbackTimeout)


WATCHDOG = HostWatchdog()


def describe(exc: BaseException) -> str:
    """An exception as one line for an exit report."""
    if isinstance(exc, CallbackTimeout):
        return "interrupted by the watchdog"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def as_exit_fields(report: ExitReport | None) -> dict[str, Any]:
    if report is None:
        return {}
    return attrs.asdict(report)


class StarvationWatchdog:
    """sched_ext's watchdog, in virtual time: a task that stays runnable without
    running past `timeout_ns` ejects the sched advisor (reason ``starved``).

    Every quarter of the timeout it notes each runnable task's CPU time and
    trap count; a task whose marks have not moved since it was first seen
    waiting is starving.  It re-arms only while tasks are runnable, so an idle
    kernel's event loop can run dry; the sched binding re-arms it at the next
    dispatch (`timer` is None).
    """

    def __init__(self, core: Any, timeout_ns: int) -> None:
        self.core = core
        self.timeout_ns = timeout_ns
        self.timer: Any = None
        self._waiting: dict[int, tuple[int, tuple[int, int]]] = {}  # pid -> (since, marks)

    def arm(self) -> None:
        period = max(self.timeout_ns // 4, 100_000)
        self.timer = self.core.kernel.loop.call_later(period, self._check)

    def stop(self) -> None:
        self._waiting.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def forget(self, pid: int) -> None:
        self._waiting.pop(pid, None)

    def _check(self, _arg: Any = None) -> None:
        self.timer = None
        kernel = self.core.kernel
        rec = self.core.attached.get("sched")
        if rec is None or kernel.halted:
            self._waiting.clear()
            return
        now = kernel.loop.now_ns
        runnable = kernel.sched.runnable()
        waiting: dict[int, tuple[int, tuple[int, int]]] = {}
        for t in runnable:
            marks = (t.cpu_ns, t.traps)
            old = self._waiting.get(t.pid)
            if old is None or old[1] != marks:
                waiting[t.pid] = (now, marks)
                continue
            waited = now - old[0]
            if waited > self.timeout_ns:
                self._waiting.clear()
                self.core.eject(
                    rec,
                    "starved",
                    f"task {t.name} (pid {t.pid}) was runnable for {waited / 1e6:.0f} ms "
                    f"without running (timeout {self.timeout_ns / 1e6:g} ms)",
                )
                return
            waiting[t.pid] = old
        self._waiting = waiting
        if runnable:
            self.arm()

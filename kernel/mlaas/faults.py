"""Faults, exit reports and the watchdog of the MLaaS subsystem.

sched_ext's contract, carried over: a module can always be detached, and a
module that misbehaves is ejected with an *exit report* (kind, reason,
message, virtual time) while the kernel falls back to its default policy.

The faults and their reasons:

=================  ==========================================================
reason             what happened
=================  ==========================================================
``raised``         module code raised (any BaseException: a callback, a
                   dunder method of something it returned, a property)
``overrun``        a callback used more CPU than its budget three timed calls
                   in a row; or one call used ten times its budget (at least
                   `MIN_HARD_LIMIT_NS`) of CPU, or blocked past
                   `HANG_LIMIT_NS` of wall time, and the watchdog interrupted it
                   (loading: `LOAD_LIMIT_NS` of CPU, `LOAD_HANG_LIMIT_NS` of wall)
``invalid``        a callback answered something the kernel cannot use
``memory``         the process grew by more than `MEMORY_LIMIT_BYTES` during
                   one call, and the watchdog interrupted it
``starved``        a runnable task waited past the starvation timeout
                   (`StarvationWatchdog`, in virtual time)
``crashed``        an isolated module's process died
``reload-failed``  `reload` could not load the changed file (the old version
                   stays in: this report does not eject)
=================  ==========================================================

**Budgets do not depend on the host's load.**  A budget is a callback's own
CPU time (the kernel thread's CPU clock), not wall time: a callback that was
descheduled, or whose process was stopped, used no CPU meanwhile.  The guard
reads the thread's CPU clock around every call of a module until it has kept
to its budget `SETTLE_CALLS` times in a row, then around one call in
`SAMPLE_EVERY`, and again around every call after its first overrun.  The
wall clock is only the hang guard, and a generous one (`HANG_LIMIT_NS`): a
call blocked that long is stuck, not slow.  The virtual time the kernel
charges for advice (`mm.advice_ns`) never comes from a host clock, so a
seeded run gives the same results on an idle host and on a busy one.

**The watchdog** is one daemon thread for the process.  It looks at every
module's call in progress every `WATCHDOG_PERIOD_S`: a call it sees twice
(so one that has run for at least a period) is followed on the thread's CPU
clock, the wall clock and the process's resident memory.  Past a limit it
interrupts the call by raising `CallbackTimeout` inside it:

* on the main thread, by a signal (`INTERRUPT_SIGNAL`), whose handler
  raises only if that very call is still running.  A signal also ends a
  blocking C call (``time.sleep``).  From the second interrupt of one call
  on, the handler also traces the module's frames so that the next line
  they run raises again: a module that catches the first interrupt
  (``except BaseException: pass``) and loops meets the second in its
  handler, outside its ``try``;
* on any other thread (the interactive terminal's kernel thread), by
  CPython's `PyThreadState_SetAsyncExc`, at every poll until the call ends.
  A blocking C call there is ejected when it returns.

The hot path pays one store before and one after each call (`CallSlot.call`).
"""

from __future__ import annotations

import ctypes
import gc
import itertools
import os
import signal
import sys
import threading
import time
import types
import weakref
from typing import Any

import attrs

from kernel.errors import SyscallError
from kernel.text import printable, value_text

#: Consecutive over-budget calls (of those timed) that eject a module.
OVERRUN_STRIKES = 3
#: Every call of a module is timed until this many in a row kept to the budget;
#: after that one call in `SAMPLE_EVERY` is, until one overruns again.
SETTLE_CALLS = 256
SAMPLE_EVERY = 64  # a thread's CPU clock costs a system call: read it seldom
#: A call this many times over its budget in CPU time is interrupted at once ...
HARD_FACTOR = 10
#: ... but never one that used less CPU than this.
MIN_HARD_LIMIT_NS = 20_000_000
#: A call blocked this long in wall time is interrupted, whatever its CPU time.
HANG_LIMIT_NS = 2_000_000_000
#: Loading a module (its top-level code, constructor, `on_load`) gets this much CPU ...
LOAD_LIMIT_NS = 10_000_000_000
#: ... and this much wall time: a module's imports may take seconds on a busy host.
#: A garbage collection, and the release of a module, get the same.
LOAD_HANG_LIMIT_NS = 60_000_000_000
#: A call during which the process grows by this much is interrupted.
MEMORY_LIMIT_BYTES = 512 << 20
#: How often the watchdog thread looks.
WATCHDOG_PERIOD_S = 0.005
#: The signal that interrupts module code on the main thread.
INTERRUPT_SIGNAL = getattr(signal, "SIGUSR2", None)


class ModuleError(SyscallError):
    """insmod, rmmod, reload or modinfo was refused; the message says why."""

    errno = "EMODULE"


class CallbackTimeout(BaseException):  # noqa: N818 - raised into module code, like KeyboardInterrupt
    """Raised by the watchdog inside a call that ran past its limit.

    A BaseException, so that a module's ``except Exception`` cannot swallow it.
    """


class InvalidAnswer(Exception):  # noqa: N818 - the guard turns it into an ``invalid`` fault
    """A callback's answer, normalised inside the guard, is not one the kernel can use."""


class HostInterrupt(KeyboardInterrupt):
    """A real Ctrl-C at the host (SIGINT on the main thread).  Only this one
    passes through the guard; a KeyboardInterrupt a module raises ejects it."""


#: An exit report's message, in characters: it may quote what a module said.
MAX_REPORT_CHARS = 512


def _report_text(text: str) -> str:
    return printable(text, MAX_REPORT_CHARS)


@attrs.frozen
class ExitReport:
    """Why a module stopped advising (or, for reload-failed, why its update did not take).

    Its reason and message are plain, bounded text with control characters
    escaped (`kernel.text.printable`): a person reads them in `modinfo` and dmesg."""

    kind: str  # "fault", "unload", "reload", "reload-failed", "shutdown"
    # the table above; "rmmod", "reload", "shutdown" for clean exits
    reason: str = attrs.field(converter=_report_text)
    message: str = attrs.field(converter=_report_text)
    t_ns: int

    def line(self) -> str:
        return f"{self.kind} ({self.reason}) at {self.t_ns / 1e9:.6f} s: {self.message}"


# -- safe descriptions: nothing here runs a method of the object described -----------

_qualname = type.__dict__["__qualname__"].__get__
_PLAIN = (int, float, bool, str, type(None))


def type_name(value: Any) -> str:
    """The name of `value`'s type, read from the type object itself (a name set
    to a str subclass is read through `str`), printable and at most 64 characters."""
    return printable(_qualname(type(value)), 64)


def callable_name(fn: Any, qualified: bool = False) -> str:
    """A callback's name, read from the function object itself: nothing of
    the module runs (a callable object's `__name__` could be a property)."""
    func = fn.__func__ if type(fn) is types.MethodType else fn
    if type(func) not in (types.FunctionType, types.BuiltinFunctionType):
        return "callback"
    return str(func.__qualname__ if qualified else func.__name__)


def describe_value(value: Any) -> str:
    """An answer as a short phrase for an exit report: plain values by their
    repr, anything else by its type alone."""
    if type(value) in _PLAIN:
        return value_text(value, 60)  # a 10**100000 by its size: str() of it raises
    if type(value) in (list, tuple, dict, set, frozenset):
        return f"a {type_name(value)} of {len(value)} items"
    return f"a {type_name(value)} object"


def describe(exc: BaseException) -> str:
    """An exception as one line for an exit report.  Its text is used only
    when the exception's class keeps BaseException's own `__str__` and its
    argument is a plain value."""
    if isinstance(exc, CallbackTimeout):
        return "interrupted by the watchdog"
    name = type_name(exc)
    args = BaseException.__dict__["args"].__get__(exc)
    if _builtin_str(type(exc)) and type(args) is tuple and len(args) == 1:
        arg = args[0]
        if type(arg) in _PLAIN:
            # A built-in __str__ of a plain value runs no module code; an int
            # too long for str() is described by its size instead.
            huge = type(arg) is int and arg.bit_length() > 792
            text = value_text(arg, 200) if huge else printable(str(exc), 200)
            return f"{name}: {text}" if text else name
    return name


_mro = type.__dict__["__mro__"].__get__
_type_dict = type.__dict__["__dict__"].__get__
_module_of = type.__dict__["__module__"].__get__


def _builtin_str(cls: type) -> bool:
    """Is the `__str__` that `cls` inherits a built-in exception's?"""
    for klass in _mro(cls):
        if "__str__" in _type_dict(klass):
            return _module_of(klass) == "builtins"
    return False


# -- the call slot, and the watchdog thread ------------------------------------------


class CallSlot:
    """The call in progress into one module (or a module being loaded), as the
    watchdog sees it.

    The hot path only writes `call`: a nonzero id while module code runs, 0
    after.  Everything else is the watchdog's: it times a call from the second
    poll that sees its id, finds its thread then (the one whose stack is inside
    a guard of this slot, `GUARD_CODES`), and records why it interrupted it.
    """

    __slots__ = (
        "call", "limit_ns", "loading", "seen_call", "polls", "wall0", "cpu0", "rss0", "thread",
        "clock", "interrupts", "why", "__weakref__",
    )  # fmt: skip

    def __init__(self, limit_ns: int = 0, loading: bool = False) -> None:
        self.call = 0
        self.limit_ns = limit_ns  # the CPU hard limit of one call
        self.loading = loading  # loading's wall-clock limit applies, not a callback's
        self.seen_call = 0
        self.polls = 0
        self.wall0 = self.cpu0 = self.rss0 = 0
        self.thread = 0
        self.clock: int | None = None
        self.interrupts = 0  # of the current call
        self.why: tuple[str, str] | None = None  # (reason, message) of the last interrupt

    def fault(self) -> tuple[str, str]:
        """The reason and message for a call that ended in `CallbackTimeout`."""
        return self.why or ("overrun", "interrupted by the watchdog")


#: Code objects of the functions that call into modules with a local `slot`.
GUARD_CODES: set[types.CodeType] = set()


#: The files of the guard's own code, which an escalated interrupt never traces.
GUARD_FILES: set[str] = {__file__}


def guard(fn: Any) -> Any:
    """Mark `fn` as a guard: it calls module code while its local `slot` is set."""
    GUARD_CODES.add(fn.__code__)
    GUARD_FILES.add(fn.__code__.co_filename)
    return fn


def _thread_inside(slot: CallSlot) -> int | None:
    for thread, frame in sys._current_frames().items():
        f: types.FrameType | None = frame
        while f is not None:
            if f.f_code in GUARD_CODES and f.f_locals.get("slot") is slot:
                return thread
            f = f.f_back
    return None


def _thread_cpu_ns(slot: CallSlot) -> int:
    if slot.clock is None:
        return 0
    try:
        return time.clock_gettime_ns(slot.clock)
    except OSError:  # the thread is gone
        return 0


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes(fd: int | None) -> int:
    if fd is None:
        return 0
    try:
        return int(os.pread(fd, 64, 0).split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _async_raise(thread_id: int, exc_type: type[BaseException] | None) -> bool:
    n = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type) if exc_type else None
    )
    return n == 1


# The call the main thread's signal handler may interrupt: (slot, call id).
_target: tuple[CallSlot, int] | None = None
_handler_installed = False


def _kill_line(frame: types.FrameType, event: str, arg: Any) -> Any:
    """The trace of an interrupted module's frames: its next line raises again.
    The guard's own code (this package's core files) is never traced."""
    target = _target
    if target is None or target[0].call != target[1]:
        sys.settrace(None)
        return None
    if frame.f_code.co_filename in GUARD_FILES:
        return None
    if event == "line":
        raise CallbackTimeout()
    return _kill_line


def _on_interrupt_signal(signum: int, frame: types.FrameType | None) -> None:
    target = _target
    if target is None or target[0].call != target[1]:
        return  # the call ended before the signal was handled
    if frame is not None and frame.f_code.co_filename in GUARD_FILES:
        return  # the module's code has returned; the guard is closing the call
    slot = target[0]
    if slot.interrupts > 1 and frame is not None:
        sys.settrace(_kill_line)
        f: types.FrameType | None = frame
        while f is not None and f.f_code not in GUARD_CODES:
            f.f_trace = _kill_line
            f = f.f_back
    raise CallbackTimeout()


def _install_signal_handler() -> None:
    """Called on the main thread: route `INTERRUPT_SIGNAL` to the guard."""
    global _handler_installed
    if _handler_installed or INTERRUPT_SIGNAL is None:
        return
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(INTERRUPT_SIGNAL) not in (signal.SIG_DFL, None):
        return  # somebody else's: leave it alone (interrupts then go by async exception)
    signal.signal(INTERRUPT_SIGNAL, _on_interrupt_signal)
    _handler_installed = True


def _on_sigint(signum: int, frame: types.FrameType | None) -> None:
    raise HostInterrupt()


def install_host_interrupt() -> None:
    """On the main thread, make Ctrl-C raise `HostInterrupt` (a KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)


def settle(slot: CallSlot) -> None:
    """After a call that ended in `CallbackTimeout`: stop the line trace of an
    escalated interrupt on this thread."""
    if slot.interrupts > 1 and threading.current_thread() is threading.main_thread():
        sys.settrace(None)


class HostWatchdog:
    """One daemon thread for the process; it runs only while some slot is watched."""

    def __init__(self) -> None:
        self._slots: weakref.WeakSet[CallSlot] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._statm: int | None = None

    def watch(self, slot: CallSlot) -> None:
        _install_signal_handler()
        with self._lock:
            self._slots.add(slot)
            if self._thread is None or not self._thread.is_alive():
                if self._statm is None:
                    try:
                        self._statm = os.open("/proc/self/statm", os.O_RDONLY)
                    except OSError:
                        self._statm = None
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
            for slot in slots:
                self._look(slot)

    def _look(self, slot: CallSlot) -> None:
        current = slot.call
        if current != slot.seen_call:  # a new call, or none
            slot.seen_call, slot.polls, slot.interrupts = current, 0, 0
            slot.thread, slot.clock = 0, None
            return
        if not current:
            return
        slot.polls += 1
        now = time.perf_counter_ns()
        if slot.polls == 1:  # it has run for a period at least: follow it
            thread = getattr(slot, "collector", 0) or _thread_inside(slot)
            if thread is None:
                return
            slot.thread = thread
            try:
                slot.clock = time.pthread_getcpuclockid(thread)
            except (OSError, AttributeError):
                slot.clock = None
            slot.wall0, slot.cpu0, slot.rss0 = now, _thread_cpu_ns(slot), _rss_bytes(self._statm)
            return
        if not slot.thread:
            return
        cpu_ns = _thread_cpu_ns(slot) - slot.cpu0
        grown = _rss_bytes(self._statm) - slot.rss0
        why: tuple[str, str] | None = None
        if cpu_ns > slot.limit_ns:
            why = ("overrun", f"used {cpu_ns / 1e6:.0f} ms of CPU without returning")
        elif grown > MEMORY_LIMIT_BYTES:  # module globals, read at each look: tests shorten them
            why = ("memory", f"grew the kernel's memory by {grown >> 20} MiB in one call "
                   f"(limit {MEMORY_LIMIT_BYTES >> 20} MiB)")  # fmt: skip
        elif now - slot.wall0 > (hang := LOAD_HANG_LIMIT_NS if slot.loading else HANG_LIMIT_NS):
            why = ("overrun", f"did not return within {hang / 1e9:g} s")
        if why is None or slot.call != current:
            return
        slot.why = why
        slot.interrupts += 1
        self._interrupt(slot, current)

    @staticmethod
    def _interrupt(slot: CallSlot, current: int) -> None:
        global _target
        main = threading.main_thread().ident
        if slot.thread == main and _handler_installed and INTERRUPT_SIGNAL is not None:
            _target = (slot, current)
            signal.pthread_kill(main, INTERRUPT_SIGNAL)
        elif slot.call == current:  # re-read: the call may have returned meanwhile
            _async_raise(slot.thread, CallbackTimeout)


WATCHDOG = HostWatchdog()


class _CollectionSlot(CallSlot):
    """A garbage collection while modules are loaded: the `__del__` of a module's
    cyclic garbage runs wherever the collector happens to run.  A collection
    that hangs is interrupted like a call (the exception ends that `__del__`,
    and Python reports it as unraisable); the kernel goes on."""

    __slots__ = ("collector",)

    def __init__(self) -> None:
        super().__init__(LOAD_LIMIT_NS, loading=True)
        self.collector = 0


def _quiet_unraisable(previous: Any) -> Any:
    def hook(args: Any) -> None:
        if args.exc_type is not CallbackTimeout:  # an interrupted __del__ is ours: no noise
            previous(args)

    return hook


def _quiet_thread_exit(previous: Any) -> Any:
    def hook(args: Any) -> None:
        if args.exc_type is not CallbackTimeout:  # a module's thread, stopped on purpose
            previous(args)

    return hook


sys.unraisablehook = _quiet_unraisable(sys.unraisablehook)
threading.excepthook = _quiet_thread_exit(threading.excepthook)

COLLECTIONS = _CollectionSlot()
_collection_ids = itertools.count(1)
_collection_watchers = 0


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        COLLECTIONS.collector = threading.get_ident()
        COLLECTIONS.call = next(_collection_ids)
    else:
        COLLECTIONS.call = 0


def watch_collections(more: int) -> None:
    """Count in (`more` = 1) or out (-1) a loaded in-process module; garbage
    collections are watched while there is one."""
    global _collection_watchers
    _collection_watchers += more
    if _collection_watchers > 0 and _on_collection not in gc.callbacks:
        gc.callbacks.append(_on_collection)
        WATCHDOG.watch(COLLECTIONS)
    elif _collection_watchers <= 0 and _on_collection in gc.callbacks:
        _collection_watchers = 0
        gc.callbacks.remove(_on_collection)
        COLLECTIONS.call = 0
        WATCHDOG.unwatch(COLLECTIONS)


def stop_threads(sources: frozenset[str], wait_s: float = 1.0) -> int:
    """Interrupt every thread (but this one) that runs code from `sources` (a
    module's files) until none does or `wait_s` passed.  Returns how many are
    still running module code then (blocked in a C call: they stop when it
    returns, at their next line)."""
    me = threading.get_ident()
    deadline = time.monotonic() + wait_s
    while True:
        running = [
            thread for thread, frame in sys._current_frames().items()
            if thread != me and _runs(frame, sources)
        ]  # fmt: skip
        if not running or time.monotonic() > deadline:
            return len(running)
        for thread in running:
            _async_raise(thread, CallbackTimeout)
        time.sleep(0.002)


def _runs(frame: types.FrameType | None, sources: frozenset[str]) -> bool:
    while frame is not None:
        if frame.f_code.co_filename in sources:
            return True
        frame = frame.f_back
    return False


class StarvationWatchdog:
    """sched_ext's watchdog, in virtual time: a task that stays runnable without
    running past `timeout_ns` ejects the sched advisor (reason ``starved``).
    A guest's clock here stops while none of its vCPUs holds a host CPU.

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
        kernel = self.core.kernel
        self.timer = kernel.loop.call_later(period, self._check, owner=kernel)

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
        now = kernel.online_ns()  # a guest's steal time is its host's doing, not the advisor's
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

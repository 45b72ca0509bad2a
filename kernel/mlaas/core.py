"""The MLaaS core: one per kernel instance, the registry of its advisor modules.

It loads modules (`insmod`), attaches each to its hook point through a
binding, detaches them (`rmmod`), swaps versions (`reload`), and reports on
them (`lsmod`, `modinfo`).  Every call into module code goes through `ask`,
the guard that enforces the fault rules of `faults.py`: a module that
raises, overruns, answers garbage, grows the kernel's memory or starves a
task is *ejected* — detached, with an exit report in dmesg and in `modinfo`
— and the kernel's default policy takes over at once.  No task, page or
message depends on a module.

What runs under the guard is everything a module wrote: its top-level code,
its class attributes and constructor (read once, at load, into plain values
on the record), its callbacks, the dunder methods of whatever it answers
(`answers.py` reads the answer inside the guard), and the `__del__` of the
objects it leaves behind (released inside the guard, at each call and when
the module goes).  Threads a module started are stopped when it goes.

A kernel has at most one advisor of each kind attached (as Linux has one
sched_ext scheduler).  Each kernel instance has its own core, so a guest
kernel's modules affect only that guest; `allow` and `choose` are the API
through which a guest picks among the modules its host allows.
"""

from __future__ import annotations

import enum
import gc
import itertools
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from time import thread_time_ns
from typing import TYPE_CHECKING, Any

import attrs

from kernel.mlaas import context, faults, loader
from kernel.mlaas.advisors import BASES, CALLBACKS, LIFECYCLE, Advisor
from kernel.mlaas.bindings import FAULTED, GpuAdvice, MemoryBinding, SchedBinding
from kernel.mlaas.context import STATE_NAMES, AdvisorContext, TaskView
from kernel.mlaas.faults import (
    OVERRUN_STRIKES,
    SAMPLE_EVERY,
    SETTLE_CALLS,
    WATCHDOG,
    CallbackTimeout,
    CallSlot,
    ExitReport,
    HostInterrupt,
    InvalidAnswer,
    ModuleError,
    StarvationWatchdog,
    callable_name,
    describe,
    guard,
    settle,
)
from kernel.text import MAX_KEY_CHARS, plain_value, printable, printable_block

if TYPE_CHECKING:
    from kernel.kernel import Kernel
    from kernel.mlaas.inference import InferenceService
    from kernel.task import Task

#: The starvation watchdog's default timeout, in virtual time.  sched_ext's
#: default is 30 s; this kernel's slices are 5 ms, so 5 s is a thousand slices.
DEFAULT_STARVE_TIMEOUT_NS = 5_000_000_000

#: A module's description in `modinfo` (its docstring), in characters.
MAX_DESCRIPTION_CHARS = 4096

_load_ids = itertools.count(1)  # each loading call its own id, for the watchdog


class ModuleState(enum.StrEnum):
    LOADING = "loading"
    LIVE = "live"
    EJECTED = "ejected"  # by a fault: listed, with its report, until rmmod
    REPLACED = "replaced"  # by reload
    REMOVED = "removed"


@attrs.define(eq=False, repr=False)
class ModuleRecord:
    """One loaded module: plain facts read at load, its advisor, its accounting,
    and its last exit report."""

    name: str
    kind: str
    path: str
    origin: str  # "shipped" (mlaas_modules/), or the path it came from
    digest: str
    doc: str
    params: dict[str, Any]
    defaults: dict[str, Any]
    api_version: int
    budget_us: float
    overridden: frozenset[str]  # the callbacks and lifecycle methods the class defines
    sources: frozenset[str]  # the module's files: its code objects' co_filename
    loaded_ns: int
    advisor: Any = None  # the module's Advisor instance (an isolated module's proxy)
    methods: dict[str, Callable[..., Any]] = attrs.Factory(dict)  # bound callbacks
    module: Any = None  # the Python module object; None once released
    isolated: Any = None  # the IsolatedModule, for `insmod --isolated`
    key: int = 0  # names the kernel to the module's context and views
    binding: Any = None
    state: ModuleState = ModuleState.LOADING
    ncalls: int = 0  # calls through Mlaas.ask
    counters: list[Callable[[], int]] = attrs.Factory(list)  # hot-path guards count their own
    timed_calls: int = 0
    timed_ns: int = 0  # CPU time of the timed calls
    faults: int = 0
    strikes: int = 0  # timed calls over budget in a row
    calm: int = 0  # timed calls within budget in a row
    sample_mask: int = 0  # time a call when (its number & mask) == 0: 0 = every call
    report: ExitReport | None = None
    infer_rows: int = 0
    infer_ns: dict[str, float] = attrs.Factory(dict)
    budget_ns: int = attrs.field(init=False)
    hard_ns: int = attrs.field(init=False)
    slot: CallSlot = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.budget_ns = int(self.budget_us * 1000)
        self.hard_ns = max(faults.HARD_FACTOR * self.budget_ns, faults.MIN_HARD_LIMIT_NS)
        self.slot = CallSlot(self.hard_ns)

    @property
    def calls(self) -> int:
        return self.ncalls + sum(c() for c in self.counters)

    @property
    def cpu_ns(self) -> int:
        """CPU time spent in the module's callbacks: the timed calls, scaled to all."""
        if not self.timed_calls:
            return 0
        return round(self.timed_ns * max(self.calls, self.timed_calls) / self.timed_calls)

    @property
    def mode(self) -> str:
        return "isolated" if self.isolated is not None else "in-process"

    def account_inference(self, backend: str, ns: float, rows: int) -> None:
        self.infer_rows += rows
        self.infer_ns[backend] = self.infer_ns.get(backend, 0.0) + ns

    def __repr__(self) -> str:
        return f"<ModuleRecord {self.name} {self.kind} {self.state}>"


@attrs.frozen
class _Loaded:
    """What loading a module produced, in plain values (and the advisor)."""

    loaded: loader.LoadedModule
    params: dict[str, Any]
    overridden: frozenset[str]
    advisor: Any
    methods: dict[str, Callable[..., Any]]


class Mlaas:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.modules: dict[str, ModuleRecord] = {}  # loaded: live or ejected
        self.attached: dict[str, ModuleRecord] = {}  # kind -> the live module
        self.history: dict[str, ExitReport] = {}  # name -> last exit report, after rmmod too
        self.module_path: list[str] = []  # searched before mlaas_modules/
        self.load_slot = CallSlot(loading=True)
        self.task_views: dict[int, TaskView] = {}
        self.task_hooks = False  # does the kernel need to tell us about spawns and exits?
        self.watchdog = StarvationWatchdog(self, DEFAULT_STARVE_TIMEOUT_NS)
        self.gpu = GpuAdvice(self)  # what the vGPU driver asks: TPC allocation, clock
        self._inference: InferenceService | None = None
        self.allowed: set[str] = set()  # modules a guest of this kernel may choose
        #: As a guest: asks the host for a module by name, and returns the path
        #: of one the host allows this guest, or raises ModuleError (a
        #: hypervisor sets it to its policy hypercall; see `offer`).
        self.host_choice: Callable[[str], str] | None = None
        #: Every module of this kernel runs isolated (what a host may require of a guest).
        self.require_isolation = False
        faults.install_host_interrupt()

    # ===================================================================
    # The guard: every call into a module
    # ===================================================================

    @guard
    def ask(
        self,
        rec: ModuleRecord,
        fn: Callable[..., Any],
        args: tuple[Any, ...] = (),
        check: Callable[[Any], Any] | None = None,
    ) -> Any:
        """Call `fn(*args)`, module code of `rec`, under the fault rules, and
        turn its answer into plain values with `check` (inside the guard).
        Returns that, or `FAULTED` if the call ejected the module."""
        slot = rec.slot
        rec.ncalls = n = rec.ncalls + 1
        timed = not n & rec.sample_mask  # others are calls the budget check skips (faults.py)
        t0 = thread_time_ns() if timed else 0
        failure = None
        slot.call = -n  # negative: the hot-path guards count their own calls upwards
        try:
            try:
                answer = fn(*args)
                if check is not None:
                    answer = check(answer)
            except HostInterrupt:
                slot.call = 0
                raise
            except BaseException as exc:
                failure = self.fault_of(rec, exc, callable_name(fn))
                answer = None
        finally:
            slot.call = 0  # whatever the module raised or answered was released above
        if failure is not None:
            settle(slot)
            self.eject(rec, *failure)
            return FAULTED
        if timed:
            if rec.isolated is None:
                used = thread_time_ns() - t0
            else:  # the child's own measure; 0 for a notice that was only queued
                used, rec.isolated.last_cpu_ns = rec.isolated.last_cpu_ns, 0
            if self.timed(rec, used, fn):
                return FAULTED
        return answer

    def call(self, rec: ModuleRecord, fn: Callable[..., Any], *args: Any) -> Any:
        """`ask` without an answer to check: notices and lifecycle calls."""
        return self.ask(rec, fn, args)

    def fault_of(self, rec: ModuleRecord, exc: BaseException, what: str) -> tuple[str, str]:
        """The reason and message of a call that ended in `exc` (read without
        running any method of it)."""
        if isinstance(exc, CallbackTimeout):
            reason, message = rec.slot.fault()
            if reason == "overrun":
                message += f" (budget {rec.budget_ns / 1e3:g} us of CPU)"
            return reason, f"{what} {message}: interrupted by the watchdog"
        if isinstance(exc, InvalidAnswer):
            return "invalid", str(exc.args[0]) if exc.args else what
        if rec.isolated is not None:
            from kernel.mlaas.isolated import IsolatedFault

            if type(exc) is IsolatedFault:
                return exc.reason, f"{what}: {exc.message}"
        return "raised", f"{what} raised {describe(exc)}"

    def timed(self, rec: ModuleRecord, dt_ns: int, fn: Any) -> bool:
        """Account a timed call (its CPU time) and apply the budget.  True if
        that ejected the module."""
        rec.timed_calls += 1
        rec.timed_ns += dt_ns
        if dt_ns <= rec.budget_ns:
            rec.strikes = 0
            rec.calm += 1
            if rec.calm >= SETTLE_CALLS:
                rec.sample_mask = SAMPLE_EVERY - 1
            return False
        rec.strikes += 1
        rec.calm = 0
        rec.sample_mask = 0  # time every call again
        if dt_ns <= rec.hard_ns and rec.strikes < OVERRUN_STRIKES:
            return False
        what = fn if isinstance(fn, str) else callable_name(fn)
        once = dt_ns > rec.hard_ns
        self.eject(
            rec,
            "overrun",
            f"{what} used {dt_ns / 1e3:.0f} us of CPU, over its {rec.budget_ns / 1e3:g} us "
            + ("budget more than tenfold" if once else f"budget {rec.strikes} calls in a row"),
        )
        return True

    def kernel_reported_fault(self, binding: Any, kind: str, message: str) -> None:
        """The scheduler or the memory manager caught a bad answer itself."""
        rec = getattr(binding, "record", None)
        if rec is not None:
            self.eject(rec, "invalid" if kind == "invalid" else "raised", message)

    def eject(self, rec: ModuleRecord, reason: str, message: str) -> None:
        """Detach a faulty module; the default policy decides from now on."""
        if rec.state != ModuleState.LIVE:
            return
        rec.faults += 1
        self._detach(rec)
        rec.state = ModuleState.EJECTED
        rec.report = ExitReport("fault", reason, message, self.kernel.loop.now_ns)
        self.history[rec.name] = rec.report
        self.kernel.log.error(
            "mlaas", "module ejected", module=rec.name, kind=rec.kind, reason=rec.report.reason,
            message=rec.report.message,
        )  # fmt: skip
        self._release(rec)

    @property
    def starve_timeout_ns(self) -> int:
        """How long a runnable task may wait, in virtual time, before the sched advisor is ejected."""
        return self.watchdog.timeout_ns

    @starve_timeout_ns.setter
    def starve_timeout_ns(self, value: int) -> None:
        self.watchdog.timeout_ns = value

    def view_of(self, task: Task) -> TaskView:
        """The task's view, made anew when its CPU time or state changed."""
        view = self.task_views.get(task.pid)
        if view is None or view[5] != task.cpu_ns or view[6] != STATE_NAMES[task.state]:
            view = self.task_views[task.pid] = TaskView.of(task)
        return view

    # ===================================================================
    # Loading and unloading
    # ===================================================================

    @property
    def search_path(self) -> list[str]:
        return [*self.module_path, *loader.default_search_path()]

    def insmod(
        self,
        spec: str,
        params: Mapping[str, Any] | None = None,
        *,
        isolated: bool = False,
        override: bool = False,
    ) -> ModuleRecord:
        """Load, validate and attach a module; `ModuleError` (and no change) if refused.

        `isolated` runs it in a sandboxed child process (`isolated.py`).  A
        module may take a shipped module's name only with `override`."""
        try:
            if self.host_choice is not None:  # a guest's modules come from its host
                path = self.host_choice(spec)
            else:
                path = loader.resolve(spec, self.search_path)
            isolated = isolated or self.require_isolation
            rec = self._prepare(path, params, replacing=None, isolated=isolated, override=override)
            self._start(rec, None)
        except ModuleError as exc:
            # Logged at info: the caller is told (the shell prints it), and a
            # warning would echo the same refusal on the console a second time.
            self.kernel.log.info(
                "mlaas", "insmod refused", module=spec, reason=str(exc).split(": ", 1)[-1]
            )
            raise
        self._attach(rec)
        self.kernel.log.info(
            "mlaas", "module loaded", module=rec.name, kind=rec.kind, path=_short(rec.path),
            mode=rec.mode, **{f"param.{k}": v for k, v in rec.params.items()},
        )  # fmt: skip
        return rec

    def rmmod(self, name: str) -> ExitReport:
        """Detach a module (its on_unload runs) and forget it; the default policy takes over."""
        rec = self._record(name)
        report = ExitReport("unload", "rmmod", "removed by rmmod", self.kernel.loop.now_ns)
        was_live = rec.state == ModuleState.LIVE
        if was_live:
            self._unload(rec)
        # An ejected module's last exit was its fault; rmmod only forgets it.
        if was_live or rec.report is None or rec.report.kind != "fault":
            rec.report = report
        rec.state = ModuleState.REMOVED
        self._forget(rec)
        self.history[name] = rec.report
        self.kernel.log.info("mlaas", "module removed", module=name)
        return rec.report

    def _unload(self, rec: ModuleRecord) -> None:
        """A clean detach: the module's on_unload runs first (a fault there still detaches)."""
        if "on_unload" in rec.overridden:
            self.call(rec, rec.methods["on_unload"])
        if rec.state == ModuleState.LIVE:
            self._detach(rec)

    def reload(self, name: str, params: Mapping[str, Any] | None = None) -> ModuleRecord:
        """rmmod + insmod of the module's file, handing its state over.  If the new
        version fails to load, the old one stays in and the failure is reported."""
        old = self._record(name)
        merged = {**old.params, **(params or {})}
        try:
            new = self._prepare(
                old.path, merged, replacing=old, isolated=old.isolated is not None, override=True
            )
        except ModuleError as exc:
            self._reload_failed(old, str(exc))
            raise ModuleError(
                f"reload of {name} failed, the old version stays in: {_reason(exc)}"
            ) from None
        state = None
        if old.state == ModuleState.LIVE and "export_state" in old.overridden:
            state = self.call(old, old.methods["export_state"])
            if state is FAULTED:
                state = None  # the old version faulted exporting: it is ejected; start clean
        try:
            self._start(new, state)
        except ModuleError as exc:
            self._release(new)
            self._reload_failed(old, str(exc))
            raise ModuleError(
                f"reload of {name} failed, the old version stays in: {_reason(exc)}"
            ) from None
        if old.state == ModuleState.LIVE:
            self._unload(old)
            old.state = ModuleState.REPLACED
        self._forget(old, keep_models=True)
        changed = new.digest != old.digest
        new.report = ExitReport(
            "reload",
            "reload",
            f"replaced version {old.digest} by {new.digest}" if changed else "reloaded unchanged",
            self.kernel.loop.now_ns,
        )
        self._attach(new)
        self.kernel.log.info(
            "mlaas", "module reloaded", module=name, changed=changed,
            state="handed over" if state is not None else "none",
        )  # fmt: skip
        return new

    def _reload_failed(self, old: ModuleRecord, reason: str) -> None:
        old.report = ExitReport(
            "reload-failed", "reload-failed", _reason(reason), self.kernel.loop.now_ns
        )
        self.kernel.log.error(
            "mlaas", "reload failed", module=old.name, reason=old.report.message,
            kept="old version" if old.state == ModuleState.LIVE else "nothing (it was ejected)",
        )  # fmt: skip

    def _record(self, name: str) -> ModuleRecord:
        rec = self.modules.get(name)
        if rec is None:
            raise ModuleError(f"no module named {name!r} is loaded")
        return rec

    def offer(self, name: str, permitted: Iterable[str] | None = None) -> str:
        """As a host: the path of the module `name` for a guest that asked for
        it, if `permitted` (by default `allowed`) names it; ModuleError if not."""
        permitted = set(self.allowed if permitted is None else permitted)
        if type(name) is not str or name not in permitted:
            allowed = ", ".join(sorted(permitted)) or "none"
            raise ModuleError(f"the host does not allow {name!r} (allowed: {allowed})")
        return loader.resolve(name, self.search_path)

    @guard
    def _run_loading(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run module code while loading (top level, class attributes, constructor,
        on_load) under the watchdog; anything it raises becomes a refusal."""
        slot = self.load_slot
        slot.limit_ns = faults.LOAD_LIMIT_NS
        WATCHDOG.watch(slot)
        failure: str | None = None
        slot.call = next(_load_ids)
        try:
            try:
                return fn(*args)
            except HostInterrupt:
                raise
            except BaseException as exc:
                failure = _load_failure(fn, exc, slot)
        finally:
            slot.call = 0
            settle(slot)
            WATCHDOG.unwatch(slot)
            if failure is not None:
                raise ModuleError(failure)

    def _prepare(
        self,
        path: str,
        params: Mapping[str, Any] | None,
        *,
        replacing: ModuleRecord | None,
        swap: bool = False,
        isolated: bool = False,
        override: bool = False,
    ) -> ModuleRecord:
        """Load and validate a module and make its advisor; nothing is attached yet.
        `replacing` is the version a reload replaces; with `swap`, whatever advisor
        of the same kind is attached will be replaced (a guest's choice)."""
        if isolated:
            rec = self._load_isolated(path, params)
        else:
            done = self._run_loading(_load_advisor, path, params)
            loaded = done.loaded
            rec = ModuleRecord(
                name=loaded.name, kind=loaded.kind, path=path, origin=loader.origin(path),
                digest=loaded.digest, doc=loaded.doc, params=done.params,
                defaults=dict(loaded.defaults), api_version=loaded.api_version,
                budget_us=loaded.budget_us,
                overridden=done.overridden, sources=frozenset(loader.sources(path)),
                loaded_ns=self.kernel.loop.now_ns, advisor=done.advisor, methods=done.methods,
                module=loaded.module,
            )  # fmt: skip
        try:
            self._check_identity(rec, replacing, swap, override)
            rec.key = context.register(self.kernel, rec)
            if rec.isolated is None:
                ctx = AdvisorContext(rec.key, rec.name, rec.kind, self.kernel.seed, rec.params)
                self._run_loading(setattr, rec.advisor, "ctx", ctx)
            return rec
        except ModuleError:
            self._release(rec)
            raise

    def _check_identity(
        self, rec: ModuleRecord, replacing: ModuleRecord | None, swap: bool, override: bool
    ) -> None:
        name, kind = rec.name, rec.kind
        if replacing is not None and name != replacing.name:
            raise ModuleError(f"the file now defines module {name!r}, not {replacing.name!r}")
        shipped = loader.shipped_path(name)
        if shipped is not None and rec.origin != "shipped" and not override:
            raise ModuleError(
                f"the name {name!r} belongs to the shipped module {_short(shipped)}: "
                "give this module a name of its own, or override the shipped one (insmod -f)"
            )
        current = self.modules.get(name)
        holder = self.attached.get(kind)
        if (
            not swap
            and current is not None
            and current is not replacing
            and current.state == ModuleState.LIVE
        ):
            raise ModuleError(f"module {name!r} is already loaded (use reload)")
        if not swap and holder is not None and holder is not replacing:
            raise ModuleError(f"the {kind} advisor {holder.name!r} is attached: rmmod it first")

    def _load_isolated(self, path: str, params: Mapping[str, Any] | None) -> ModuleRecord:
        from kernel.mlaas import isolated

        host = _IsolatedHost(self)
        # `Limits()` is what the README's table shows.  Its hang limit ends a
        # question before the watchdog's wall-clock limit, which stays behind it.
        handle = isolated.start(path, params, seed=self.kernel.seed, host=host)
        rec = ModuleRecord(
            name=handle.name, kind=handle.kind, path=path, origin=loader.origin(path),
            digest=handle.digest, doc=handle.doc, params=dict(handle.params),
            defaults=dict(handle.defaults), api_version=handle.api_version,
            budget_us=handle.budget_us, overridden=frozenset(handle.overridden),
            sources=frozenset(), loaded_ns=self.kernel.loop.now_ns, advisor=handle.advisor,
            isolated=handle,
        )  # fmt: skip
        rec.methods = {n: getattr(handle.advisor, n) for n in rec.overridden}
        host.record = rec
        return rec

    def _start(self, rec: ModuleRecord, state: Any) -> None:
        """on_load, then (on reload) the old version's state."""
        try:
            if "on_load" in rec.overridden:
                self._run_loading(rec.methods["on_load"])
            if state is not None and "import_state" in rec.overridden:
                self._run_loading(rec.methods["import_state"], state)
        except ModuleError:
            self._release(rec)
            raise

    def _attach(self, rec: ModuleRecord) -> None:
        rec.state = ModuleState.LIVE
        previous = self.modules.get(rec.name)
        if previous is not None and previous is not rec:
            self._forget(previous, keep_models=True)  # an ejected version of the same module
        self.modules[rec.name] = rec
        self.attached[rec.kind] = rec
        k = self.kernel
        if rec.kind == "memory":
            rec.binding = MemoryBinding(self, rec, k.mm.policy)
            rec.binding.bind(k.mm)
        elif rec.kind == "sched":
            rec.binding = SchedBinding(self, rec)
            rec.binding.bind(k.sched)
        self._update_task_hooks()
        WATCHDOG.watch(rec.slot)
        if rec.isolated is None:
            faults.watch_collections(+1)

    def _detach(self, rec: ModuleRecord) -> None:
        if self.attached.get(rec.kind) is rec:
            del self.attached[rec.kind]
        if isinstance(rec.binding, MemoryBinding):
            rec.binding.unbind(self.kernel.mm)
        elif isinstance(rec.binding, SchedBinding):
            rec.binding.unbind(self.kernel.sched)
            self.task_views.clear()
            self.watchdog.stop()
        if self._inference is not None:
            self._inference.drop_owner(rec)
        self._update_task_hooks()
        WATCHDOG.unwatch(rec.slot)
        if rec.isolated is None:
            faults.watch_collections(-1)

    def _forget(self, rec: ModuleRecord, keep_models: bool = False) -> None:
        if self.modules.get(rec.name) is rec:
            del self.modules[rec.name]
        if not keep_models and self._inference is not None:
            self._inference.drop_models(rec.name + ".")
        self._release(rec)

    @guard
    def _release(self, rec: ModuleRecord) -> None:
        """The module is gone: close its views, stop its threads (or its child
        process), and drop its objects — under the guard, so that whatever its
        objects' `__del__` do is contained."""
        context.release(rec.key)
        if rec.isolated is not None:
            rec.isolated.close()
        if rec.sources:
            faults.stop_threads(rec.sources)
        if rec.module is None and rec.advisor is None and rec.binding is None:
            return
        slot = self.load_slot
        slot.limit_ns = faults.LOAD_LIMIT_NS
        WATCHDOG.watch(slot)
        slot.call = next(_load_ids)
        try:
            try:
                module, rec.module, rec.advisor, rec.methods = rec.module, None, None, {}
                binding, rec.binding = rec.binding, None
                if binding is not None:
                    binding.close()  # the hot-path guard's reference to the module's callback
                del binding
                if module is not None:
                    loader.forget(module)
                del module
                gc.collect()
            except HostInterrupt:
                raise
            except BaseException:  # noqa: S110 - a module's __del__: it is going anyway
                pass
        finally:
            slot.call = 0
            settle(slot)
            WATCHDOG.unwatch(slot)

    def _update_task_hooks(self) -> None:
        self.task_hooks = "sched" in self.attached or "memory" in self.attached

    def shutdown(self) -> None:
        """Detach every module (the kernel is going away) and forget their code."""
        for rec in list(self.modules.values()):
            if rec.state == ModuleState.LIVE:
                self._detach(rec)
                rec.state = ModuleState.REMOVED
                rec.report = ExitReport(
                    "shutdown", "shutdown", "the kernel shut down", self.kernel.loop.now_ns
                )
            self._release(rec)

    # ===================================================================
    # Reports
    # ===================================================================

    # What a module wrote (its file's path, docstring and parameter defaults)
    # reaches a person through these two: plain, bounded text, control
    # characters escaped (`kernel.text.printable`).  Exit reports are already.

    def lsmod(self) -> list[dict[str, Any]]:
        return [
            {"name": r.name, "kind": r.kind, "state": str(r.state), "calls": r.calls,
             "time_ms": r.cpu_ns / 1e6, "faults": r.faults, "mode": r.mode,
             "origin": printable(r.origin, None)}
            for r in self.modules.values()
        ]  # fmt: skip

    def modinfo(self, name: str) -> dict[str, Any]:
        rec = self.modules.get(name)
        if rec is None:
            if name in self.history:
                return {"name": name, "state": "not loaded", "last_exit": self.history[name]}
            raise ModuleError(f"no module named {printable(name)!r} is loaded")
        return {
            "name": rec.name, "kind": rec.kind, "state": str(rec.state),
            "path": printable(rec.path, None), "origin": printable(rec.origin, None),
            "mode": rec.mode, "version": rec.digest,
            "description": printable_block(rec.doc, MAX_DESCRIPTION_CHARS),
            "params": _plain_params(rec.params), "defaults": _plain_params(rec.defaults),
            "api_version": rec.api_version, "budget_us": rec.budget_us,
            "calls": rec.calls, "time_ms": rec.cpu_ns / 1e6, "faults": rec.faults,
            "inference_rows": rec.infer_rows, "inference_ns": dict(rec.infer_ns),
            "last_exit": rec.report,
        }  # fmt: skip

    def advisor(self, kind: str) -> Advisor | None:
        rec = self.attached.get(kind)
        return None if rec is None else rec.advisor

    # ===================================================================
    # Kernel notices (called by the kernel only while `task_hooks` is set)
    # ===================================================================

    def notify_spawn(self, task: Task) -> None:
        rec = self.attached.get("sched")
        if rec is not None:
            view = self.view_of(task)
            if rec.binding.wants_spawn:
                self.call(rec, rec.methods["on_spawn"], view)
        rec = self.attached.get("memory")
        if rec is not None and rec.binding.wants_launch:
            self.call(rec, rec.methods["on_launch"], task.pid, task.name)

    def notify_exit(self, task: Task) -> None:
        rec = self.attached.get("sched")
        if rec is not None:
            self.task_views.pop(task.pid, None)
            self.watchdog.forget(task.pid)
            if rec.binding.wants_exit:
                self.call(rec, rec.methods["on_exit"], TaskView.of(task), task.cpu_ns)

    # ===================================================================
    # Kernel-space inference (the service is made on first use: it needs numpy)
    # ===================================================================

    @property
    def inference(self) -> InferenceService:
        if self._inference is None:
            from kernel.mlaas.inference import InferenceService

            self._inference = InferenceService(
                self.kernel, deliver=self._deliver, charge=self._charge
            )
        return self._inference

    def register_backend(self, kind: str, backend: Any) -> None:
        """Offer an inference back end (the vGPU driver registers ``vgpu``)."""
        self.inference.register_backend(kind, backend)

    def _charge(self, rec: ModuleRecord, wait_ns: int) -> None:
        """A module waited `wait_ns` for an inference result.  A memory advisor
        decides inside a page fault, so the faulting task waits with it; the
        other hook points are not delayed (the time is in the module's account)."""
        if rec.kind == "memory":
            self.kernel.mm.advice_ns += wait_ns

    def _deliver(self, request: Any) -> None:
        rec = request.owner
        if rec is None:
            request.callback(request.value)
        elif rec.state == ModuleState.LIVE:
            self.call(rec, request.callback, request.value)

    # ===================================================================
    # Per-VM selection
    # ===================================================================

    def allow(self, *names: str) -> None:
        """As a host: let guests choose these modules (by name in the module path)."""
        for name in names:
            loader.resolve(name, self.search_path)  # refuse names that do not exist
            self.allowed.add(name)

    def choose(self, name: str, params: Mapping[str, Any] | None = None) -> ModuleRecord:
        """As a guest: attach a module the host allows, in place of this kernel's
        current advisor of that kind.  The hypervisor's policy hypercall lands here."""
        if self.host_choice is None:
            raise ModuleError("this kernel has no host to choose modules from")
        try:
            path = self.host_choice(name)
            rec = self._prepare(
                path, params, replacing=None, swap=True, isolated=self.require_isolation
            )
            self._start(rec, None)
        except ModuleError as exc:
            self.kernel.log.warning("mlaas", "choose refused", module=name, reason=_reason(exc))
            raise
        old = self.attached.get(rec.kind)
        if old is not None:
            self.rmmod(old.name)
        self._attach(rec)
        self.kernel.log.info("mlaas", "module chosen", module=rec.name, kind=rec.kind)
        return rec


def _load_advisor(path: str, params: Mapping[str, Any] | None) -> _Loaded:
    """Everything of a module that loading runs: its top level, its class's
    attributes and constructor.  Runs under `Mlaas._run_loading`; what it
    returns is plain values, the advisor and its bound callbacks."""
    loaded = loader.load(path)
    try:
        cls = loaded.cls
        base = BASES[loaded.kind]
        overridden = frozenset(
            n for n in (*CALLBACKS[loaded.kind], *LIFECYCLE)
            if getattr(cls, n, None) is not getattr(base, n, None)
        )  # fmt: skip
        values = loader.convert_params(loaded, params)
        advisor = cls()
        methods = {n: getattr(advisor, n) for n in overridden}
        return _Loaded(loaded=loaded, params=values, overridden=overridden, advisor=advisor,
                       methods=methods)  # fmt: skip
    except BaseException:
        loader.forget(loaded.module)
        raise


def _load_failure(fn: Any, exc: BaseException, slot: CallSlot) -> str:
    """Why loading was refused, read without running any method of `exc`."""
    what = callable_name(fn, qualified=True)
    if isinstance(exc, ModuleError):
        return str(exc.args[0]) if exc.args and type(exc.args[0]) is str else "refused"
    if isinstance(exc, CallbackTimeout):
        return f"{what} {slot.fault()[1]}: interrupted by the watchdog"
    if "kernel.mlaas.isolated" in sys.modules:  # an isolated module's on_load, say
        from kernel.mlaas.isolated import IsolatedFault

        if type(exc) is IsolatedFault:
            return f"{what}: {exc.message}"
    return f"{what} raised {describe(exc)}"


class _IsolatedHost:
    """What an isolated module's context reaches in the kernel: virtual time,
    the log, and its read-only views (`isolated.IsolatedHost`)."""

    def __init__(self, core: Mlaas) -> None:
        self.core = core
        self.record: ModuleRecord | None = None

    def now_ns(self) -> int:
        return self.core.kernel.loop.now_ns

    def log(self, level: str, event: str, fields: dict[str, Any]) -> None:
        name = self.record.name if self.record is not None else "isolated"
        self.core.kernel.log.module(name, level, event, fields)  # the in-process modules' door

    def query(self, view: str, method: str, args: tuple[Any, ...]) -> Any:
        rec = self.record
        if rec is None or rec.key == 0:
            raise ModuleError("the module's views are not open")
        target: Any
        if view == "memory" and rec.kind == "memory":
            target = context.MemoryView(rec.key)
        elif view == "sched" and rec.kind == "sched":
            target = context.SchedView(rec.key)
        else:
            raise ModuleError(f"a {rec.kind} advisor has no {view} view")
        if method.startswith("_") or not hasattr(type(target), method):
            raise ModuleError(f"the {view} view has no {method!r}")
        value = getattr(target, method)
        result = value(*args) if callable(value) else value
        if isinstance(result, list):
            return [tuple(r) if isinstance(r, TaskView) else r for r in result]
        return tuple(result) if isinstance(result, TaskView) else result


def _plain_params(params: Mapping[str, Any]) -> dict[str, Any]:
    return {printable(k, MAX_KEY_CHARS): plain_value(v) for k, v in params.items()}


def _short(path: str) -> str:
    """How a log line names a module file: a shipped module as
    ``mlaas_modules/NAME``, any other by its absolute path.  Never relative to
    the working directory: a guest's log enters its snapshot's state hash,
    and a snapshot restores from any directory."""
    if loader.origin(path) == "shipped":
        return os.path.join("mlaas_modules", os.path.basename(path.rstrip(os.sep)))
    return os.path.abspath(path)


def _reason(exc: Exception | str) -> str:
    text = str(exc)
    return text.split(": ", 1)[1] if text.startswith("EMODULE: ") else text

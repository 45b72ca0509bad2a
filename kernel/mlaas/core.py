"""The MLaaS core: one per kernel instance, the registry of its advisor modules.

It loads modules (`insmod`), attaches each to its hook point through a
binding, detaches them (`rmmod`), swaps versions (`reload`), and reports on
them (`lsmod`, `modinfo`).  Every call into a module goes through `call`,
the guard that enforces the fault rules of `faults.py`: a module that
raises, overruns, answers garbage or starves a task is *ejected* — detached,
with an exit report in dmesg and in `modinfo` — and the kernel's default
policy takes over at once.  No task, page or message depends on a module.

A kernel has at most one advisor of each kind attached (as Linux has one
sched_ext scheduler).  Each kernel instance has its own core, so a guest
kernel's modules affect only that guest; `allow` and `choose` are the API
through which a guest picks among the modules its host allows.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

from kernel.mlaas import loader
from kernel.mlaas.advisors import Advisor, overrides
from kernel.mlaas.bindings import FAULTED, GpuAdvice, MemoryBinding, SchedBinding
from kernel.mlaas.context import AdvisorContext, TaskView
from kernel.mlaas.faults import (
    HARD_FACTOR,
    LOAD_LIMIT_NS,
    MIN_HARD_LIMIT_NS,
    OVERRUN_STRIKES,
    SAMPLE_EVERY,
    SETTLE_CALLS,
    WATCHDOG,
    CallbackTimeout,
    CallSlot,
    ExitReport,
    ModuleError,
    StarvationWatchdog,
    describe,
    guard,
)

if TYPE_CHECKING:
    from kernel.kernel import Kernel
    from kernel.mlaas.inference import InferenceService
    from kernel.task import Task

#: The starvation watchdog's default timeout, in virtual time.  sched_ext's
#: default is 30 s; this kernel's slices are 5 ms, so 5 s is a thousand slices.
DEFAULT_STARVE_TIMEOUT_NS = 5_000_000_000

_load_ids = itertools.count(1)


class ModuleRecord:
    """One loaded module: its advisor, its accounting, and its last exit report."""

    def __init__(self, loaded: loader.LoadedModule, params: dict[str, Any], now_ns: int) -> None:
        self.name = loaded.name
        self.kind = loaded.kind
        self.path = loaded.path
        self.digest = loaded.digest
        self.doc = loaded.doc
        self.cls = loaded.cls
        self.module = loaded.module
        self.params = params
        self.advisor: Any = None  # the module's Advisor instance, set by Mlaas._prepare
        self.binding: Any = None
        self.state = "loading"
        self.loaded_ns = now_ns
        self._calls = 0  # calls through Mlaas.call
        self.counters: list[Any] = []  # hot-path guards count their own calls
        self.timed_calls = 0
        self.timed_ns = 0
        self.faults = 0
        self.strikes = 0  # timed calls over budget in a row
        self.calm = 0  # timed calls within budget in a row
        self.sample_mask = 0  # time a call when (its number & mask) == 0: 0 = every call
        self.budget_ns = int(loaded.cls.budget_us * 1000)
        self.hard_ns = max(HARD_FACTOR * self.budget_ns, MIN_HARD_LIMIT_NS)
        self.slot = CallSlot(self.hard_ns)
        self.report: ExitReport | None = None
        self.infer_rows = 0
        self.infer_ns: dict[str, float] = {}

    @property
    def calls(self) -> int:
        return self._calls + sum(c() for c in self.counters)

    @property
    def host_ns(self) -> int:
        """Host time spent in the module's callbacks: the timed calls, scaled to all."""
        if not self.timed_calls:
            return 0
        return round(self.timed_ns * max(self.calls, self.timed_calls) / self.timed_calls)

    def account_inference(self, backend: str, ns: float, rows: int) -> None:
        self.infer_rows += rows
        self.infer_ns[backend] = self.infer_ns.get(backend, 0.0) + ns

    def __repr__(self) -> str:
        return f"<ModuleRecord {self.name} {self.kind} {self.state}>"


class Mlaas:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.modules: dict[str, ModuleRecord] = {}  # loaded: live or ejected
        self.attached: dict[str, ModuleRecord] = {}  # kind -> the live module
        self.history: dict[str, ExitReport] = {}  # name -> last exit report, after rmmod too
        self.module_path: list[str] = []  # searched before mlaas_modules/
        self.load_slot = CallSlot()
        self.task_views: dict[int, TaskView] = {}
        self.task_hooks = False  # does the kernel need to tell us about spawns and exits?
        self.watchdog = StarvationWatchdog(self, DEFAULT_STARVE_TIMEOUT_NS)
        self.gpu = GpuAdvice(self)  # what the vGPU driver asks: TPCs, atoms, clock
        self._inference: InferenceService | None = None
        self.allowed: set[str] = set()  # modules a guest of this kernel may choose
        self.host: Mlaas | None = None  # set when this kernel is a guest

    # ===================================================================
    # The guard: every call into a module
    # ===================================================================

    @guard
    def call(self, rec: ModuleRecord, fn: Any, *args: Any) -> Any:
        """Call `fn(*args)`, a callback of `rec`, under the fault rules.
        Returns its answer, or `FAULTED` if the call ejected the module."""
        slot = rec.slot
        rec._calls = n = rec._calls + 1
        timed = not n & rec.sample_mask  # others are calls the budget check skips (faults.py)
        t0 = perf_counter_ns() if timed else 0
        slot.call = -n
        try:
            answer = fn(*args)
            slot.call = 0
        except KeyboardInterrupt:
            slot.call = 0
            raise
        except BaseException as exc:
            slot.call = 0
            self.failed(rec, exc, getattr(fn, "__name__", "callback"))
            return FAULTED
        if timed and self.timed(rec, perf_counter_ns() - t0, fn):
            return FAULTED
        return answer

    def failed(self, rec: ModuleRecord, exc: BaseException, what: str) -> None:
        if isinstance(exc, CallbackTimeout):
            self.eject(
                rec,
                "overrun",
                f"{what} did not return within {rec.hard_ns / 1e6:g} ms "
                f"(budget {rec.budget_ns / 1e3:g} us): interrupted by the watchdog",
            )
        else:
            self.eject(rec, "raised", f"{what} raised {describe(exc)}")

    def timed(self, rec: ModuleRecord, dt_ns: int, fn: Any) -> bool:
        """Account a timed call and apply the budget.  True if that ejected the module."""
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
        if rec.strikes < OVERRUN_STRIKES:
            return False
        what = fn if isinstance(fn, str) else getattr(fn, "__name__", "callback")
        self.eject(
            rec,
            "overrun",
            f"{what} took {dt_ns / 1e3:.0f} us, over its {rec.budget_ns / 1e3:g} us "
            f"budget {rec.strikes} calls in a row",
        )
        return True

    def kernel_reported_fault(self, binding: Any, kind: str, message: str) -> None:
        """The scheduler or the memory manager caught a bad answer itself."""
        rec = getattr(binding, "record", None)
        if rec is not None:
            self.eject(rec, "invalid" if kind == "invalid" else "raised", message)

    def eject(self, rec: ModuleRecord, reason: str, message: str) -> None:
        """Detach a faulty module; the default policy decides from now on."""
        if rec.state != "live":
            return
        rec.faults += 1
        self._detach(rec)
        rec.state = "ejected"
        rec.report = ExitReport("fault", reason, message, self.kernel.loop.now_ns)
        self.history[rec.name] = rec.report
        self.kernel.log.error(
            "mlaas",
            "module ejected",
            module=rec.name,
            kind=rec.kind,
            reason=reason,
            message=message,
        )

    @property
    def starve_timeout_ns(self) -> int:
        """How long a runnable task may wait, in virtual time, before the sched advisor is ejected."""
        return self.watchdog.timeout_ns

    @starve_timeout_ns.setter
    def starve_timeout_ns(self, value: int) -> None:
        self.watchdog.timeout_ns = value

    def view_of(self, task: Task) -> TaskView:
        view = self.task_views.get(task.pid)
        if view is None:
            view = self.task_views[task.pid] = TaskView(task)
        return view

    # ===================================================================
    # Loading and unloading
    # ===================================================================

    @property
    def search_path(self) -> list[str]:
        return [*self.module_path, *loader.default_search_path()]

    def insmod(self, spec: str, params: Mapping[str, Any] | None = None) -> ModuleRecord:
        """Load, validate and attach a module; `ModuleError` (and no change) if refused."""
        try:
            if self.host is not None:
                self._check_host_allows(spec)
            path = loader.resolve(spec, self.search_path)
            rec = self._prepare(path, params, replacing=None)
            self._start(rec, None)
        except ModuleError as exc:
            self.kernel.log.warning(
                "mlaas", "insmod refused", module=spec, reason=str(exc).split(": ", 1)[-1]
            )
            raise
        self._attach(rec)
        self.kernel.log.info(
            "mlaas",
            "module loaded",
            module=rec.name,
            kind=rec.kind,
            path=_short(rec.path),
            **{f"param.{k}": v for k, v in rec.params.items()},
        )
        return rec

    def rmmod(self, name: str) -> ExitReport:
        """Detach a module (its on_unload runs) and forget it; the default policy takes over."""
        rec = self._record(name)
        report = ExitReport("unload", "rmmod", "removed by rmmod", self.kernel.loop.now_ns)
        if rec.state == "live":
            self._unload(rec)
        # An ejected module's last exit was its fault; rmmod only forgets it.
        if rec.state == "live" or rec.report is None or rec.report.kind != "fault":
            rec.report = report
        rec.state = "removed"
        self._forget(rec)
        self.history[name] = rec.report
        self.kernel.log.info("mlaas", "module removed", module=name)
        return rec.report

    def _unload(self, rec: ModuleRecord) -> None:
        """A clean detach: the module's on_unload runs first (a fault there still detaches)."""
        if overrides(rec.cls, Advisor, "on_unload"):
            self.call(rec, rec.advisor.on_unload)
        if rec.state == "live":
            self._detach(rec)

    def reload(self, name: str, params: Mapping[str, Any] | None = None) -> ModuleRecord:
        """rmmod + insmod of the module's file, handing its state over.  If the new
        version fails to load, the old one stays in and the failure is reported."""
        old = self._record(name)
        merged = {**{k: v for k, v in old.params.items()}, **(params or {})}
        try:
            new = self._prepare(old.path, merged, replacing=old)
        except ModuleError as exc:
            self._reload_failed(old, str(exc))
            raise ModuleError(
                f"reload of {name} failed, the old version stays in: {_reason(exc)}"
            ) from None
        state = None
        if old.state == "live" and overrides(old.cls, Advisor, "export_state"):
            state = self.call(old, old.advisor.export_state)
            if state is FAULTED:
                state = None  # the old version faulted exporting: it is ejected; start clean
        try:
            self._start(new, state)
        except ModuleError as exc:
            loader.forget(new.module)
            self._reload_failed(old, str(exc))
            raise ModuleError(
                f"reload of {name} failed, the old version stays in: {_reason(exc)}"
            ) from None
        if old.state == "live":
            self._unload(old)
            old.state = "replaced"
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
            "mlaas",
            "module reloaded",
            module=name,
            changed=changed,
            state="handed over" if state is not None else "none",
        )
        return new

    def _reload_failed(self, old: ModuleRecord, reason: str) -> None:
        old.report = ExitReport(
            "reload-failed", "reload-failed", _reason(reason), self.kernel.loop.now_ns
        )
        self.kernel.log.error(
            "mlaas",
            "reload failed",
            module=old.name,
            reason=_reason(reason),
            kept="old version" if old.state == "live" else "nothing (it was ejected)",
        )

    def _record(self, name: str) -> ModuleRecord:
        rec = self.modules.get(name)
        if rec is None:
            raise ModuleError(f"no module named {name!r} is loaded")
        return rec

    def _check_host_allows(self, name: str) -> None:
        assert self.host is not None
        if name not in self.host.allowed:
            allowed = ", ".join(sorted(self.host.allowed)) or "none"
            raise ModuleError(f"the host does not allow {name!r} (allowed: {allowed})")

    @guard
    def _run_loading(self, fn: Any, *args: Any) -> Any:
        """Run module code while loading (top level, constructor, on_load) under the
        watchdog; anything it raises becomes a refusal."""
        slot = self.load_slot
        slot.limit_ns = LOAD_LIMIT_NS
        WATCHDOG.watch(slot)
        slot.call = next(_load_ids)
        try:
            return fn(*args)
        except KeyboardInterrupt:
            raise
        except CallbackTimeout:
            raise ModuleError(
                f"{getattr(fn, '__qualname__', 'loading')} did not finish within "
                f"{LOAD_LIMIT_NS / 1e9:g} s: interrupted by the watchdog"
            ) from None
        except ModuleError:
            raise
        except BaseException as exc:
            raise ModuleError(
                f"{getattr(fn, '__qualname__', 'loading')} raised {describe(exc)}"
            ) from None
        finally:
            slot.call = 0
            WATCHDOG.unwatch(slot)

    def _prepare(
        self,
        path: str,
        params: Mapping[str, Any] | None,
        *,
        replacing: ModuleRecord | None,
        swap: bool = False,
    ) -> ModuleRecord:
        """Load and validate a module and make its advisor; nothing is attached yet.
        `replacing` is the version a reload replaces; with `swap`, whatever advisor
        of the same kind is attached will be replaced (a guest's choice)."""
        loaded = loader.load(path, self._run_loading)
        try:
            name, kind = loaded.name, loaded.kind
            if replacing is not None and name != replacing.name:
                raise ModuleError(f"the file now defines module {name!r}, not {replacing.name!r}")
            current = self.modules.get(name)
            holder = self.attached.get(kind)
            if (
                not swap
                and current is not None
                and current is not replacing
                and current.state == "live"
            ):
                raise ModuleError(f"module {name!r} is already loaded (use reload)")
            if not swap and holder is not None and holder is not replacing:
                raise ModuleError(f"the {kind} advisor {holder.name!r} is attached: rmmod it first")
            values = loader.convert_params(loaded.cls, params)
            rec = ModuleRecord(loaded, values, self.kernel.loop.now_ns)
            advisor = self._run_loading(loaded.cls)
            advisor.ctx = AdvisorContext(self.kernel, rec, values)
            rec.advisor = advisor
            return rec
        except ModuleError:
            loader.forget(loaded.module)
            raise

    def _start(self, rec: ModuleRecord, state: Any) -> None:
        try:
            if state is not None:
                self._run_loading(rec.advisor.import_state, state)
            self._run_loading(rec.advisor.on_load)
        except ModuleError:
            loader.forget(rec.module)
            raise

    def _attach(self, rec: ModuleRecord) -> None:
        rec.state = "live"
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

    def _forget(self, rec: ModuleRecord, keep_models: bool = False) -> None:
        if self.modules.get(rec.name) is rec:
            del self.modules[rec.name]
        if not keep_models and self._inference is not None:
            self._inference.drop_models(rec.name + ".")
        loader.forget(rec.module)

    def _update_task_hooks(self) -> None:
        self.task_hooks = "sched" in self.attached or "memory" in self.attached

    def shutdown(self) -> None:
        """Detach every module (the kernel is going away) and forget their code."""
        for rec in list(self.modules.values()):
            if rec.state == "live":
                self._detach(rec)
                rec.state = "removed"
                rec.report = ExitReport(
                    "shutdown", "shutdown", "the kernel shut down", self.kernel.loop.now_ns
                )
            loader.forget(rec.module)

    # ===================================================================
    # Reports
    # ===================================================================

    def lsmod(self) -> list[dict[str, Any]]:
        return [
            {"name": r.name, "kind": r.kind, "state": r.state, "calls": r.calls,
             "time_ms": r.host_ns / 1e6, "faults": r.faults}
            for r in self.modules.values()
        ]  # fmt: skip

    def modinfo(self, name: str) -> dict[str, Any]:
        rec = self.modules.get(name)
        if rec is None:
            if name in self.history:
                return {"name": name, "state": "not loaded", "last_exit": self.history[name]}
            raise ModuleError(f"no module named {name!r} is loaded")
        return {
            "name": rec.name, "kind": rec.kind, "state": rec.state, "path": rec.path, "version": rec.digest,
            "description": rec.doc, "params": dict(rec.params), "defaults": dict(rec.cls.params),
            "api_version": rec.cls.api_version, "budget_us": rec.cls.budget_us,
            "calls": rec.calls, "time_ms": rec.host_ns / 1e6, "faults": rec.faults,
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
                self.call(rec, rec.advisor.on_spawn, view)
        rec = self.attached.get("memory")
        if rec is not None and rec.binding.wants_launch:
            self.call(rec, rec.advisor.on_launch, task.pid, task.name)

    def notify_exit(self, task: Task) -> None:
        rec = self.attached.get("sched")
        if rec is not None:
            view = self.task_views.pop(task.pid, None) or TaskView(task)
            self.watchdog.forget(task.pid)
            if rec.binding.wants_exit:
                self.call(rec, rec.advisor.on_exit, view, task.cpu_ns)

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
        elif rec.state == "live":
            self.call(rec, request.callback, request.value)

    # ===================================================================
    # Per-VM selection
    # ===================================================================

    def allow(self, *names: str) -> None:
        """As a host: let guests choose these modules (by name in the module path)."""
        for name in names:
            loader.resolve(name, self.search_path)  # refuse names that do not exist
            self.allowed.add(name)

    def disallow(self, *names: str) -> None:
        self.allowed.difference_update(names)

    def choose(self, name: str, params: Mapping[str, Any] | None = None) -> ModuleRecord:
        """As a guest: attach a module the host allows, in place of this kernel's
        current advisor of that kind.  The hypervisor's policy hypercall lands here."""
        if self.host is None:
            raise ModuleError("this kernel has no host to choose modules from")
        try:
            self._check_host_allows(name)
            path = loader.resolve(name, self.host.search_path)
            rec = self._prepare(path, params, replacing=None, swap=True)
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


def _short(path: str) -> str:
    return os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path


def _reason(exc: Exception | str) -> str:
    text = str(exc)
    return text.split(": ", 1)[1] if text.startswith("EMODULE: ") else text

"""The advisor bases: the whole contract between the kernel and an MLaaS module.

A module defines one class that derives from exactly one of the four bases
below.  The model is Linux sched_ext's `struct sched_ext_ops`: a policy is a
table of optional callbacks with a required `name`.  Every callback here has a
no-op default, and the kernel only calls the callbacks a module overrides, so
an advisor that overrides nothing costs nothing and changes nothing.

An answer of None always means "no opinion: let the default policy decide".
Anything else is checked: an answer that the kernel cannot use (a victim that
is not a candidate, a task that is not runnable, a mask with no TPC, a clock
the device does not have) is a fault, and the module is ejected.

Each advisor is handed an `AdvisorContext` as `self.ctx` before `on_load`:
the kernel-space inference API, the feature store, its own dmesg logger, its
parameters, and a read-only view of what it advises on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

if TYPE_CHECKING:
    from kernel.mlaas.context import AdvisorContext, TaskView

#: The advisor API version this kernel implements.  A module may declare an
#: older one that is still in SUPPORTED_API_VERSIONS.
API_VERSION = 1
SUPPORTED_API_VERSIONS = frozenset({1})

#: Budget limits a module may declare for one callback, in CPU time.
DEFAULT_BUDGET_US = 1_000.0
MAX_BUDGET_US = 100_000.0


class Advisor:
    """What every advisor has.  Derive from one of the four kinds below, not from this."""

    #: Required: the module's name in lsmod (letters, digits, '_' and '-').
    name: ClassVar[str] = ""
    #: Which subsystem it advises; set by the bases.
    kind: ClassVar[str] = ""
    api_version: ClassVar[int] = API_VERSION
    #: CPU-time budget of one callback, in microseconds (the callback's own
    #: thread CPU time, so a busy host does not eat into it).  Three timed
    #: calls over it in a row, or one call ten times over (interrupted by the
    #: watchdog), eject the module; see `faults.py` for which calls are timed.
    budget_us: ClassVar[float] = DEFAULT_BUDGET_US
    #: Parameters and their defaults; `insmod NAME key=value` sets them and the
    #: default's type (int, float, bool, str) is the parameter's type.
    params: ClassVar[Mapping[str, Any]] = {}

    ctx: AdvisorContext

    # -- lifecycle (all optional) ---------------------------------------------

    def on_load(self) -> None:
        """Called once after `self.ctx` is set and before the first callback.
        Raising here refuses the load; nothing in the kernel changes."""

    def on_unload(self) -> None:
        """Called when the module is detached by rmmod or reload (not after a fault)."""

    def export_state(self) -> Any:
        """`reload` hands what this returns to the new version's `import_state`."""
        return None

    def import_state(self, state: Any) -> None:
        """Take over the old version's state on `reload`."""


class MemoryAdvisor(Advisor):
    """Advises the memory manager: which frame to evict and which pages to prefetch.

    Pages are named by ``(pid, vpn)``; physical frames by their number.
    `self.ctx.memory` is a read-only `MemoryView` of the frames.
    """

    kind = "memory"

    def on_access(self, frame: int, pid: int, vpn: int) -> None:
        """A task touched page `vpn` (resident in `frame`).  Called on every
        access, so only override it if the policy needs recency (LRU)."""

    def on_fault(self, pid: int, vpn: int, major: bool) -> None:
        """Page `vpn` of `pid` faulted in: from swap if `major`, else zero-filled."""

    def on_evict(self, frame: int, pid: int, vpn: int) -> None:
        """Page `vpn` of `pid` left `frame` for the swap device."""

    def on_launch(self, pid: int, program: str) -> None:
        """A task started running `program`."""

    def select_victim(self, candidates: Sequence[int]) -> int | None:
        """Choose the frame to evict among `candidates`: the resident frames that
        may be evicted now, in ascending order (so `bisect` finds one fast)."""
        return None

    def prefetch(self, pid: int, vpn: int) -> Iterable[int | tuple[int, int]] | None:
        """After a fault on `vpn`: pages to bring in too, as vpns of the same
        task or ``(pid, vpn)`` pairs of any task.  The faulting task's own pages
        load with its fault; other tasks' pages load in the background, one per
        swap I/O time.  Pages that are not swapped out are skipped, and at most
        32 (`MAX_PREFETCH_PAGES`) are taken from one answer.  Prefetched pages
        start unreferenced."""
        return None


class SchedAdvisor(Advisor):
    """Advises the CPU scheduler: the next task to run and its time slice.

    Tasks are `TaskView`s: read-only, with pid, name, argv, cpu_ns, created_ns.
    """

    kind = "sched"

    def on_spawn(self, task: TaskView) -> None:
        """A task was created (it is runnable)."""

    def select_next(self, candidates: Sequence[TaskView], cpu: int) -> TaskView | None:
        """Choose the task CPU `cpu` runs next, among the runnable `candidates`."""
        return None

    def time_slice(self, task: TaskView) -> int | None:
        """The slice, in ns, that `task` gets now that it was dispatched."""
        return None

    def on_exit(self, task: TaskView, runtime_ns: int) -> None:
        """`task` exited after using `runtime_ns` of CPU time."""


class GpuAdvisor(Advisor):
    """Advises the vGPU driver: the sharing mechanism, or TPCs per context.

    The driver asks through `Mlaas.gpu` (a `GpuAdvice`); the views it passes
    describe its contexts and kernels.  TPC masks are int bit sets (bit t: TPC t).
    """

    kind = "gpu"
    #: A sharing mechanism of the vGPU driver for this module to select
    #: (``"lithos"``, ``"mig"``, ...); the module's insmod parameters are its
    #: parameter set.  None: the driver's default, guided by the callbacks.
    sharing_policy: str | None = None

    def tpc_allocation(self, contexts: Sequence[int], n_tpcs: int) -> Mapping[int, int] | None:
        """A TPC mask for each context id in `contexts`, on a device of `n_tpcs`."""
        return None


class PowerAdvisor(Advisor):
    """Advises the vGPU driver on the GPU clock."""

    kind = "power"

    def frequency(self, device: Any) -> int | None:
        """The clock, in MHz, the device should run at; one of `device.clocks_mhz`."""
        return None


BASES: dict[str, type[Advisor]] = {
    "memory": MemoryAdvisor,
    "sched": SchedAdvisor,
    "gpu": GpuAdvisor,
    "power": PowerAdvisor,
}

LIFECYCLE = ("on_load", "on_unload", "export_state", "import_state")


def callbacks_of(base: type[Advisor]) -> tuple[str, ...]:
    """The callback names a base defines (its own, not the lifecycle's)."""
    return tuple(n for n, v in vars(base).items() if callable(v) and not n.startswith("_"))


def overrides(cls: type, base: type[Advisor], name: str) -> bool:
    """Does `cls` replace `base`'s no-op `name`?"""
    return getattr(cls, name, None) is not getattr(base, name, None)


# ======================================================================
# The callback table: one row per callback
# ======================================================================
#
# Everything else about a callback derives from its row: the bindings'
# wrappers ask through `check`, the isolated proxy encodes arguments by
# `args` and decodes the answer by `answer` (`isolated.py`), and the child
# rebuilds the arguments and puts the answer on the wire by the same names
# (`child.py`).  A new callback is a no-op method on its base above, a row
# here, and the kernel code that asks it (docs/recipes/mlaas-callback.md).

#: Argument kinds on the wire.  ``plain``: an int, bool or str, sent as it
#: is.  ``frames``: a list of ints.  ``task``: a `TaskView`.  ``tasks``: a list
#: of them.  ``contexts``: ints or kernel objects (GPU contexts).  ``device``:
#: a kernel object, sent as a copy of its plain attributes.  ``state``: plain
#: data handed over on reload.
ARG_KINDS = frozenset({"plain", "frames", "task", "tasks", "contexts", "device", "state"})
#: Answer kinds on the wire.  ``plain``: plain data.  ``task``: one of the
#: `TaskView`s the callback was given (sent as its pid).  ``pages``: prefetch's
#: vpns and (pid, vpn) pairs.
ANSWER_KINDS = frozenset({"plain", "task", "pages"})

#: At most this many pages are prefetched per fault.
MAX_PREFETCH_PAGES = 32
#: The time slices a sched advisor may grant.
MIN_SLICE_NS = 10_000
MAX_SLICE_NS = 10_000_000_000
#: A TPC allocation names at most this many contexts.
MAX_CONTEXTS = 4096


def _member(ascending: Sequence[int], value: int) -> bool:
    from bisect import bisect_left

    i = bisect_left(ascending, value)
    return i < len(ascending) and ascending[i] == value


# Validators: ``check(answer, *args)`` runs inside the guard (`Mlaas.ask`) on
# the module's raw answer and the arguments it was asked with; it returns the
# answer as plain values (None: no opinion) or raises `InvalidAnswer`, which
# ejects the module as ``invalid``.  They are the only rules an answer meets.


def _no_answer(answer: Any, *args: Any) -> None:
    return None


def _check_victim(answer: Any, candidates: Sequence[int]) -> int | None:
    from kernel.mlaas.answers import InvalidAnswer, plain_optional_int

    frame = plain_optional_int(answer, "select_victim's answer")
    if frame is not None and not _member(candidates, frame):
        raise InvalidAnswer(f"select_victim returned {frame}, not one of the candidate frames")
    return frame


def _check_prefetch(answer: Any, pid: int, vpn: int) -> list[int | tuple[int, int]]:
    from kernel.mlaas.answers import plain_items, plain_page

    items = plain_items(answer, "prefetch's answer", MAX_PREFETCH_PAGES)
    return [plain_page(item, "prefetch's answer") for item in items]


def _check_slice(answer: Any, task: Any) -> int | None:
    from kernel.mlaas.answers import InvalidAnswer, plain_optional_int

    ns = plain_optional_int(answer, "time_slice's answer")
    if ns is not None and not MIN_SLICE_NS <= ns <= MAX_SLICE_NS:
        raise InvalidAnswer(
            f"time_slice returned {ns} ns, not a slice in [{MIN_SLICE_NS}, {MAX_SLICE_NS}] ns"
        )
    return ns


def _check_chosen(answer: Any, candidates: Any, cpu: int) -> int | None:
    """select_next's answer: one of the `TaskView`s it was given, read as its pid.
    (Whether that pid is runnable is the scheduler's table to say: `bindings.py`.)"""
    from kernel.mlaas.answers import InvalidAnswer
    from kernel.mlaas.context import TaskView
    from kernel.mlaas.faults import describe_value

    if answer is None:
        return None
    if type(answer) is not TaskView:
        raise InvalidAnswer(
            f"select_next returned {describe_value(answer)}, not one of the TaskViews it was given"
        )
    pid: int = tuple.__getitem__(answer, 0)  # type: ignore[assignment]
    return pid


def _check_masks(answer: Any, contexts: Sequence[int], n_tpcs: int) -> dict[int, int] | None:
    from kernel.mlaas.answers import InvalidAnswer, plain_int_map

    if answer is None:
        return None
    masks = plain_int_map(answer, "tpc_allocation's answer", MAX_CONTEXTS)
    asked = set(contexts)
    full = (1 << n_tpcs) - 1
    for ctx, mask in masks.items():
        if ctx not in asked:
            raise InvalidAnswer(f"tpc_allocation named context {ctx}, which was not asked about")
        if mask <= 0 or mask & ~full:
            raise InvalidAnswer(
                f"tpc_allocation gave context {ctx} mask {mask:#x}: "
                f"a mask must name at least one of TPCs 0-{n_tpcs - 1} and no other"
            )
    return masks


def _check_clock(answer: Any, device: Any) -> int | None:
    from kernel.mlaas.answers import InvalidAnswer, plain_optional_int

    mhz = plain_optional_int(answer, "frequency's answer")
    clocks = device.clocks_mhz
    if mhz is not None and mhz not in clocks:
        lo, hi = min(clocks), max(clocks)
        raise InvalidAnswer(
            f"frequency returned {mhz} MHz, not a clock of the device ({lo}-{hi} MHz)"
        )
    return mhz


@attrs.frozen
class CallbackSpec:
    """One callback: who has it, how it travels, and what answer it may give.

    `notice`: it has no answer, so an isolated module's calls are queued and
    sent with the next question (`isolated.py`).  `args`: one `ARG_KINDS`
    name per argument, how it is encoded for an isolated module and rebuilt
    in its child.  `answer`: an `ANSWER_KINDS` name.  `check`: the validator.
    """

    name: str
    kind: str
    notice: bool
    args: tuple[str, ...]
    check: Callable[..., Any]
    answer: str = "plain"

    def __attrs_post_init__(self) -> None:
        unknown = set(self.args) - ARG_KINDS
        if unknown or self.answer not in ANSWER_KINDS:
            raise ValueError(f"callback {self.name}: unknown wire kinds {unknown or self.answer}")


def _notice(name: str, kind: str, *args: str) -> CallbackSpec:
    return CallbackSpec(name, kind, True, args, _no_answer)


#: The callbacks, by name.  Lifecycle calls are in `LIFECYCLE_SPECS`.
CALLBACK_TABLE: dict[str, CallbackSpec] = {
    spec.name: spec
    for spec in (
        _notice("on_access", "memory", "plain", "plain", "plain"),
        _notice("on_fault", "memory", "plain", "plain", "plain"),
        _notice("on_evict", "memory", "plain", "plain", "plain"),
        _notice("on_launch", "memory", "plain", "plain"),
        CallbackSpec("select_victim", "memory", False, ("frames",), _check_victim),
        CallbackSpec("prefetch", "memory", False, ("plain", "plain"), _check_prefetch, "pages"),
        _notice("on_spawn", "sched", "task"),
        CallbackSpec("select_next", "sched", False, ("tasks", "plain"), _check_chosen, "task"),
        CallbackSpec("time_slice", "sched", False, ("task",), _check_slice),
        _notice("on_exit", "sched", "task", "plain"),
        CallbackSpec("tpc_allocation", "gpu", False, ("contexts", "plain"), _check_masks),
        CallbackSpec("frequency", "power", False, ("device",), _check_clock),
    )
}

#: The lifecycle calls, for the isolated protocol (the core checks their answers).
LIFECYCLE_SPECS: dict[str, CallbackSpec] = {
    spec.name: spec
    for spec in (
        CallbackSpec("on_load", "", False, (), _no_answer),
        CallbackSpec("on_unload", "", False, (), _no_answer),
        CallbackSpec("export_state", "", False, (), _no_answer),
        CallbackSpec("import_state", "", False, ("state",), _no_answer),
    )
}


def spec_of(name: str) -> CallbackSpec:
    """The row of callback or lifecycle call `name`."""
    spec = CALLBACK_TABLE.get(name)
    return spec if spec is not None else LIFECYCLE_SPECS[name]


#: The callback names of each kind of advisor, from the table.
CALLBACKS: dict[str, tuple[str, ...]] = {
    kind: tuple(spec.name for spec in CALLBACK_TABLE.values() if spec.kind == kind)
    for kind in BASES
}

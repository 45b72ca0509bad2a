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

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

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


CALLBACKS: dict[str, tuple[str, ...]] = {kind: callbacks_of(base) for kind, base in BASES.items()}


def overrides(cls: type, base: type[Advisor], name: str) -> bool:
    """Does `cls` replace `base`'s no-op `name`?"""
    return getattr(cls, name, None) is not getattr(base, name, None)

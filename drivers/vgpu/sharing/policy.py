"""The sharing-policy interface and what the policies share (`drivers/vgpu/policies`).

A policy is a small table of optional callbacks, in the spirit of the MLaaS
advisors: the simulator calls

* `kernel_ready(s)` when stream `s` has a kernel whose blocks are not all
  launched (a new kernel, or the rest of one after a policy switch);
* `atom_done(s, atom, kernel_done)` when one of its atoms completed;
* `stream_idle(s)` when an open-loop stream has no request left;

and the policy answers by launching atoms (`sim.launch`), holding kernels in
its own queues, and setting timers (`call_at`).  The default passes each
kernel through whole, on `mask(s)` at `priority(s)`, in the order the host
enqueued it: that is MPS.  Policies that hold kernels release them with
`launch_whole`, in the order of their release.

A policy declares its parameters once, in `PARAMETERS`: each names a
keyword of its constructor, whose default is the parameter's default.  The
policy's MLaaS module (`mlaas_modules/gpu_<policy>.py`, written from this
declaration by `drivers/vgpu/sharing/modules.py`) carries them as plain
insmod parameters, and `keywords` turns those back into constructor
arguments.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

import attrs

from drivers.vgpu.engine import Engine
from drivers.vgpu.presets import GpuSpec
from drivers.vgpu.sharing.compiled import Pol
from drivers.vgpu.work import KernelDesc

#: Atom priorities the policies use (larger dispatches first).  Equal
#: priorities go in launch order: the device runs with ``dispatch_order="launch"``.
PRIO_HIGH = 3
PRIO_NORMAL = 2
PRIO_LOW = 1
PRIO_STOLEN = 0


class Stream(Protocol):
    """What a policy sees of one stream: sim.py's `Stream`, or the driver's `ProgramStream`."""

    index: int
    hp: bool
    quota: float
    request_iso_ns: int
    desc: KernelDesc | None
    grid: int
    launched: int
    inflight: int
    #: Atom id -> TPC mask, and -> priority, for each of its atoms in flight.
    inflight_masks: dict[int, int]
    inflight_priorities: dict[int, int]
    ready_ns: int
    kernel_iso_ns: int
    kernel_sms: int
    kernel_profile: int
    kernel_key: Hashable

    def host_order(self, now_ns: int) -> int: ...

    @property
    def active(self) -> bool: ...

    @property
    def has_kernel(self) -> bool: ...

    @property
    def remaining(self) -> int: ...

    @property
    def kernel_pending(self) -> bool: ...


class Device(Protocol):
    """What a policy is in charge of: a `Simulation`, or the driver's `StreamScheduler`.

    The harness imports the policies, never the other way round: this is all
    a policy knows of it."""

    spec: GpuSpec
    gpu: Engine
    n_tpcs: int
    full_mask: int
    now_ns: int
    running: bool
    policy: Any
    #: Per atom id: when it was launched.
    atom_launch_ns: list[int]

    @property
    def streams(self) -> Sequence[Stream]: ...

    def call_at(self, t_ns: int, fn: Callable, *args: Any, owner: Any = None) -> None: ...

    def launch(
        self,
        s: Any,
        blocks: int,
        mask: int,
        priority: int,
        *,
        stolen: bool = False,
        order: int | None = None,
    ) -> int: ...

    def set_clock(self, clock_mhz: int) -> int: ...


def _same(value: Any) -> Any:
    return value


@attrs.frozen
class Parameter:
    """One parameter of a policy's MLaaS module, which sets the constructor's `keyword`.

    A module carries plain values (bool, int, float, str): `to_policy` turns
    an insmod value into the keyword's, and `to_module` shows the keyword's
    default as the module's.  With `skip_empty`, an empty value ("") leaves
    the constructor's default."""

    keyword: str
    to_policy: Callable[[Any], Any] = _same
    to_module: Callable[[Any], Any] = _same
    skip_empty: bool = False


def plain(keyword: str) -> Parameter:
    """A parameter passed through as it is."""
    return Parameter(keyword)


def converted(keyword: str, kind: Callable[[Any], Any]) -> Parameter:
    """A parameter converted by `kind` (`int`, `float`) on its way to the policy."""
    return Parameter(keyword, to_policy=kind)


def microseconds(keyword: str, minimum: int | None = None) -> Parameter:
    """A whole number of microseconds for a keyword in nanoseconds (None: 0).

    With `minimum`, a value below it is refused (a ValueError that names the
    parameter), before any policy is built."""

    def to_policy(us: Any) -> int:
        value = int(us)
        if minimum is not None and value < minimum:
            name = keyword.removesuffix("_ns") + "_us"
            raise ValueError(f"{name} must be at least {minimum} us, got {value}")
        return value * 1000

    return Parameter(
        keyword, to_policy=to_policy, to_module=lambda ns: 0 if ns is None else ns // 1000
    )


def number_list(keyword: str, kind: Callable[[float], Any]) -> Parameter:
    """Comma-separated numbers for a tuple keyword (None, the default: "")."""
    return Parameter(
        keyword,
        to_policy=lambda text: tuple(kind(float(x)) for x in str(text).split(",") if x.strip()),
        to_module=lambda values: "" if values is None else ",".join(str(v) for v in values),
        skip_empty=True,
    )


class SharingPolicy:
    """Base of the sharing policies: MPS-like whole-kernel launches unless overridden."""

    name: ClassVar[str] = ""
    #: One line on how the policy shares the GPU (its module's description).
    summary: ClassVar[str] = ""
    #: The module's parameters, by name, in the order the module lists them.
    PARAMETERS: ClassVar[Mapping[str, Parameter]] = {}
    #: The module of its compiled callbacks (`drivers/vgpu/sharing/registry.py`),
    #: if not its own.
    compiled_module: ClassVar[str | None] = None
    sim: Device

    @classmethod
    def module_params(cls) -> dict[str, Any]:
        """The module's parameters with their defaults: the constructor's, in the module's units."""
        signature = inspect.signature(cls).parameters
        return {
            name: p.to_module(signature[p.keyword].default) for name, p in cls.PARAMETERS.items()
        }

    @classmethod
    def keywords(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor keyword arguments from a module's parameters (those it sets).

        A malformed value is a ValueError."""
        return {
            p.keyword: p.to_policy(params[name])
            for name, p in cls.PARAMETERS.items()
            if name in params and not (p.skip_empty and not params[name])
        }

    @property
    def label(self) -> str:
        """The name results are filed under (variants add a suffix)."""
        return self.name

    def attach(self, sim: Device) -> None:
        self.sim = sim
        self.setup()

    def setup(self) -> None:
        """Called once the simulation and its streams exist."""

    def detach(self) -> None:
        """The policy is switched out: held kernels go back to their streams."""

    def call_at(self, t_ns: int, fn, *args: Any) -> None:
        self.sim.call_at(t_ns, fn, *args, owner=self)

    # -- callbacks -----------------------------------------------------------

    def kernel_ready(self, s: Stream) -> None:
        self.launch_whole(s, s.host_order(self.sim.now_ns))

    def launch_whole(self, s: Stream, order: int | None = None) -> int:
        """Launch the rest of `s`'s current kernel as one atom."""
        return self.sim.launch(s, s.remaining, self.mask(s), self.priority(s), order=order)

    def atom_done(self, s: Stream, atom: int, kernel_done: bool) -> None:
        """An atom of `s` completed (its TPCs are free, not yet re-dispatched)."""

    def stream_idle(self, s: Stream) -> None:
        """Open-loop stream `s` finished its requests and has none queued."""

    def report(self) -> dict[str, Any]:
        """Policy-specific figures for the results."""
        return {}

    # -- a shipped policy's callbacks (compiled.py) ----------------------------

    def compiled_setup(self, sim: Any) -> Pol | None:
        """The state of this policy's callbacks on `sim` (a `Simulation` or
        the driver's `StreamScheduler`); None for a policy written in Python
        (its methods above run, interpreted: python_policy.py)."""
        return None

    def compiled_report(self, pol: Pol) -> dict[str, Any]:
        """The figures for the results, from the callbacks' state after a run
        (a policy written in Python: its `report`)."""
        return self.report()

    # -- defaults ------------------------------------------------------------

    def mask(self, s: Stream) -> int:
        return self.sim.full_mask

    def priority(self, s: Stream) -> int:
        return PRIO_NORMAL


def range_mask(first: int, count: int, n_tpcs: int) -> int:
    """`count` TPCs from `first` on, wrapping past the last TPC."""
    if count >= n_tpcs:
        return (1 << n_tpcs) - 1
    mask = 0
    for i in range(count):
        mask |= 1 << ((first + i) % n_tpcs)
    return mask

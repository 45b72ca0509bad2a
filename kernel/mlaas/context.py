"""What an advisor sees of the kernel: its context object and read-only views.

An advisor never holds a kernel object.  It gets `TaskView`s (values: a
tuple of the task's pid, name, argv, ...) instead of tasks, frame numbers
and ``(pid, vpn)`` pairs instead of page-table entries, and an
`AdvisorContext` with the services the kernel offers modules:

* ``ctx.infer(model, features)`` — batched kernel-space inference (LAKE),
  on the CPU or the vGPU by the crossover policy; ``ctx.model(...)`` makes a
  model and ``ctx.load_weights(model, ...)`` replaces its weights at run time;
* ``ctx.features`` — the kernel's feature store;
* ``ctx.log`` — the module's own dmesg logger;
* ``ctx.params``, ``ctx.now_ns``, ``ctx.rng`` (seeded from the kernel's seed);
* ``ctx.memory`` or ``ctx.sched`` — a read-only view of what it advises on.

The views and the context hold no reference to the kernel: only plain values
and a number that names their kernel in this file's `_SOURCES` table, which
the kernel fills at insmod and empties when the module goes.  (In one
process, code that goes looking can reach any object through `gc`; that is
what isolated modules are for.  These views close the doors a module would
walk through by accident: `view._task._kernel...`.)
"""

from __future__ import annotations

import itertools
import random
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from kernel.task import State

if TYPE_CHECKING:
    from kernel.kernel import Kernel
    from kernel.mlaas.features import FeatureStore
    from kernel.mlaas.inference import Model, Request
    from kernel.task import Task


class _Source:
    __slots__ = ("kernel", "record")

    def __init__(self, kernel: Kernel, record: Any) -> None:
        self.kernel = kernel
        self.record = record


_SOURCES: dict[int, _Source] = {}
_keys = itertools.count(1)


def register(kernel: Kernel, record: Any) -> int:
    key = next(_keys)
    _SOURCES[key] = _Source(kernel, record)
    return key


def release(key: int) -> None:
    """The module is gone: its context and views read nothing any more."""
    _SOURCES.pop(key, None)


def _source(key: int) -> _Source:
    source = _SOURCES.get(key)
    if source is None:
        raise RuntimeError("this module is no longer loaded: its views are closed")
    return source


#: A task's state as a view names it.
STATE_NAMES = {state: state.name.lower() for state in State}


class TaskView(NamedTuple):
    """A task as a sched advisor sees it: values, taken when the view was made."""

    pid: int
    name: str
    argv: tuple[str, ...]
    parent: int
    created_ns: int
    cpu_ns: int  # CPU time used when the view was made
    state: str
    alive: bool

    @classmethod
    def of(cls, task: Task) -> TaskView:
        proc = task.proc
        return tuple.__new__(
            cls,
            (
                task.pid, task.name, tuple(proc.argv) if proc is not None else (), task.parent,
                task.created_ns, task.cpu_ns, STATE_NAMES[task.state], task.alive,
            ),
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"<TaskView {self.pid} {self.name}>"


class MemoryView:
    """A read-only view of physical memory, for memory advisors."""

    __slots__ = ("_key",)

    def __init__(self, key: int) -> None:
        self._key = key

    def _mm(self) -> Any:
        return _source(self._key).kernel.mm

    @property
    def nframes(self) -> int:
        return self._mm().nframes

    @property
    def free_frames(self) -> int:
        return len(self._mm().free_frames)

    def owner(self, frame: int) -> tuple[int, int] | None:
        """The ``(pid, vpn)`` resident in `frame`, or None if it is free."""
        owner = self._mm().owner[_frame(frame, self._mm().nframes)]
        return None if owner is None else (owner[0].pid, owner[1])

    def referenced(self, frame: int) -> bool:
        """The frame's reference bit (set on access, cleared by CLOCK)."""
        mm = self._mm()
        return bool(mm.referenced[_frame(frame, mm.nframes)])

    def _table(self, pid: int) -> dict:
        task = _source(self._key).kernel.tasks.get(int(pid))
        if task is None or task.aspace is None:
            return {}
        return task.aspace.table

    def is_resident(self, pid: int, vpn: int) -> bool:
        pte = self._table(pid).get(vpn)
        return pte is not None and pte.frame >= 0

    def is_swapped(self, pid: int, vpn: int) -> bool:
        pte = self._table(pid).get(vpn)
        return pte is not None and pte.slot >= 0

    def frame_of(self, pid: int, vpn: int) -> int | None:
        pte = self._table(pid).get(vpn)
        return pte.frame if pte is not None and pte.frame >= 0 else None

    def swapped_pages(self, pid: int) -> list[int]:
        return [vpn for vpn, pte in self._table(pid).items() if pte.slot >= 0]


def _frame(frame: Any, nframes: int) -> int:
    n = int.__index__(frame) if issubclass(type(frame), int) else int(frame)
    if not 0 <= n < nframes:
        raise IndexError(f"frame {n} is not one of this kernel's {nframes} frames")
    return n


class SchedView:
    """A read-only view of the scheduler, for sched advisors."""

    __slots__ = ("_key",)

    def __init__(self, key: int) -> None:
        self._key = key

    @property
    def ncpus(self) -> int:
        return len(_source(self._key).kernel.cpus)

    @property
    def default_slice_ns(self) -> int:
        return _source(self._key).kernel.sched.slice_ns

    def task(self, pid: int) -> TaskView | None:
        kernel = _source(self._key).kernel
        task = kernel.tasks.get(pid)
        return None if task is None else kernel.mlaas.view_of(task)

    def runnable(self) -> list[TaskView]:
        kernel = _source(self._key).kernel
        view_of = kernel.mlaas.view_of
        return [view_of(t) for t in kernel.sched.runnable()]


class ModuleLog:
    """A module's dmesg logger: lines carry subsystem ``mlaas`` and the module's name.

    What it is given goes to `KernelLog.module` as it is (no ``str(event)``:
    that would run the module's ``__str__`` in the kernel's code), and is
    converted there to plain, bounded, printable values under the module's
    quota.  `event` is positional-only, so a field named ``event`` is a field."""

    __slots__ = ("_key", "_module")

    def __init__(self, key: int, module: str) -> None:
        self._key = key
        self._module = module

    def info(self, event: str, /, **fields: Any) -> None:
        _source(self._key).kernel.log.module(self._module, "info", event, fields)

    def warning(self, event: str, /, **fields: Any) -> None:
        _source(self._key).kernel.log.module(self._module, "warning", event, fields)


class AdvisorContext:
    """The services the kernel hands one advisor (see the module docstring)."""

    __slots__ = ("_key", "name", "kind", "params", "log", "rng", "memory", "sched")

    def __init__(
        self, key: int, name: str, kind: str, seed: Any, params: Mapping[str, Any]
    ) -> None:
        self._key = key
        self.name = name
        self.kind = kind
        self.params: Mapping[str, Any] = types.MappingProxyType(dict(params))
        self.log = ModuleLog(key, name)
        self.rng = random.Random(f"{seed}:{name}")
        self.memory: MemoryView | None = MemoryView(key) if kind == "memory" else None
        self.sched: SchedView | None = SchedView(key) if kind == "sched" else None

    @property
    def now_ns(self) -> int:
        """Virtual time."""
        return _source(self._key).kernel.loop.now_ns

    @property
    def features(self) -> FeatureStore:
        return _source(self._key).kernel.mlaas.inference.features

    def model(
        self,
        name: str,
        layers: tuple[int, ...] | list[int],
        *,
        output: str = "linear",
        weights: Any = None,
    ) -> Model:
        """A multi-layer perceptron, ``layers = (inputs, hidden..., outputs)``, with
        ReLU between layers.  Without `weights` it starts from a seeded random init."""
        return _source(self._key).kernel.mlaas.inference.model(
            f"{self.name}.{name}",
            layers,
            output=output,
            weights=weights,
            seed=self.rng.getrandbits(32),
        )

    def load_weights(self, model: Model, weights: Any) -> None:
        """Replace `model`'s weights: a list of ``(W, b)`` arrays or an ``.npz`` path.
        A shape that does not match the model is a `WeightShapeError`."""
        model.load_weights(weights)

    def infer(self, model: Model, features: Any, *, callback: Any = None) -> Request:
        """Queue `features` (one vector, or a matrix of row vectors) for `model`.

        Requests for the same model share a batch that closes when it is full
        or when its time window ends.  ``.result()`` closes it at once and
        returns the outputs; `callback(outputs)` is called when it completes.
        """
        source = _source(self._key)
        return source.kernel.mlaas.inference.submit(
            model, features, owner=source.record, callback=callback
        )

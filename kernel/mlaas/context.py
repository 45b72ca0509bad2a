"""What an advisor sees of the kernel: its context object and read-only views.

An advisor never holds a kernel object.  It gets `TaskView`s instead of
tasks, frame numbers and ``(pid, vpn)`` pairs instead of page-table entries,
and an `AdvisorContext` with the services the kernel offers modules:

* ``ctx.infer(model, features)`` — batched kernel-space inference (LAKE),
  on the CPU or the vGPU by the crossover policy; ``ctx.model(...)`` makes a
  model and ``ctx.load_weights(model, ...)`` replaces its weights at run time;
* ``ctx.features`` — the kernel's feature store;
* ``ctx.log`` — the module's own dmesg logger;
* ``ctx.params``, ``ctx.now_ns``, ``ctx.rng`` (seeded from the kernel's seed);
* ``ctx.memory`` or ``ctx.sched`` — a read-only view of what it advises on.
"""

from __future__ import annotations

import random
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kernel.kernel import Kernel
    from kernel.mlaas.core import ModuleRecord
    from kernel.mlaas.features import FeatureStore
    from kernel.mlaas.inference import Model, Request
    from kernel.task import Task


class TaskView:
    """A read-only view of a task, for sched advisors."""

    __slots__ = ("_task",)

    def __init__(self, task: Task) -> None:
        self._task = task

    @property
    def pid(self) -> int:
        return self._task.pid

    @property
    def name(self) -> str:
        return self._task.name

    @property
    def argv(self) -> tuple[str, ...]:
        proc = self._task.proc
        return proc.argv if proc is not None else ()

    @property
    def parent(self) -> int:
        return self._task.parent

    @property
    def created_ns(self) -> int:
        return self._task.created_ns

    @property
    def cpu_ns(self) -> int:
        """CPU time used so far."""
        return self._task.cpu_ns

    @property
    def state(self) -> str:
        return self._task.state.name.lower()

    @property
    def alive(self) -> bool:
        return self._task.alive

    def __repr__(self) -> str:
        return f"<TaskView {self.pid} {self.name}>"


class MemoryView:
    """A read-only view of physical memory, for memory advisors."""

    __slots__ = ("_mm", "_tasks")

    def __init__(self, kernel: Kernel) -> None:
        self._mm = kernel.mm
        self._tasks = kernel.tasks

    @property
    def nframes(self) -> int:
        return self._mm.nframes

    @property
    def free_frames(self) -> int:
        return len(self._mm.free_frames)

    def owner(self, frame: int) -> tuple[int, int] | None:
        """The ``(pid, vpn)`` resident in `frame`, or None if it is free."""
        owner = self._mm.owner[frame]
        return None if owner is None else (owner[0].pid, owner[1])

    def referenced(self, frame: int) -> bool:
        """The frame's reference bit (set on access, cleared by CLOCK)."""
        return self._mm.referenced[frame]

    def _table(self, pid: int) -> dict:
        task = self._tasks.get(pid)
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


class SchedView:
    """A read-only view of the scheduler, for sched advisors."""

    __slots__ = ("_kernel", "_views")

    def __init__(self, kernel: Kernel, views: dict[int, TaskView]) -> None:
        self._kernel = kernel
        self._views = views

    @property
    def ncpus(self) -> int:
        return len(self._kernel.cpus)

    @property
    def default_slice_ns(self) -> int:
        return self._kernel.sched.slice_ns

    def task(self, pid: int) -> TaskView | None:
        task = self._kernel.tasks.get(pid)
        return None if task is None else self._views.get(pid) or TaskView(task)

    def runnable(self) -> list[TaskView]:
        return [self._views.get(t.pid) or TaskView(t) for t in self._kernel.sched.runnable()]


class ModuleLog:
    """A module's dmesg logger: lines carry subsystem ``mlaas`` and the module's name."""

    __slots__ = ("_log", "_module")

    def __init__(self, log: Any, module: str) -> None:
        self._log = log
        self._module = module

    def info(self, event: str, **fields: Any) -> None:
        self._log.info("mlaas", event, module=self._module, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log.warning("mlaas", event, module=self._module, **fields)


class AdvisorContext:
    """The services the kernel hands one advisor (see the module docstring)."""

    def __init__(self, kernel: Kernel, record: ModuleRecord, params: Mapping[str, Any]) -> None:
        self._kernel = kernel
        self._record = record
        self.name = record.name
        self.kind = record.kind
        self.params: Mapping[str, Any] = types.MappingProxyType(dict(params))
        self.log = ModuleLog(kernel.log, record.name)
        self.rng = random.Random(f"{kernel.seed}:{record.name}")
        self.memory: MemoryView | None = MemoryView(kernel) if record.kind == "memory" else None
        self.sched: SchedView | None = None
        if record.kind == "sched":
            self.sched = SchedView(kernel, kernel.mlaas.task_views)

    @property
    def now_ns(self) -> int:
        """Virtual time."""
        return self._kernel.loop.now_ns

    @property
    def features(self) -> FeatureStore:
        return self._kernel.mlaas.inference.features

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
        return self._kernel.mlaas.inference.model(
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
        return self._kernel.mlaas.inference.submit(
            model, features, owner=self._record, callback=callback
        )

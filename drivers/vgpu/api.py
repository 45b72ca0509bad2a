"""The virtual GPU's device API, shared by the compiled engine and the reference model.

`VirtualGpu` is the one way in to a virtual GPU (`drivers/vgpu`).  It owns
what both timing back ends have in common and what is not on the hot path:

* contexts (processes or VMs on the GPU) and their device memory;
* the kernel registry, and the check that a kernel's atoms never overlap;
* the validation of every argument, before any state changes;
* kernel completion (a kernel is done when its last block is) and the
  results of functional kernels.

`engine.Engine` (numba) and `reference.ReferenceEngine` (plain Python)
subclass it and supply only the timing back end: block dispatch, the clock,
power and energy.  Both must give identical results; the tests check it.

The driver loop a policy runs on top of it::

    gpu = Engine("a100")
    ctx = gpu.create_context()
    gpu.launch(ctx, kernel, mask=0b1111, priority=1)
    while events := gpu.advance(until_ns):
        ...                      # launch more atoms at gpu.now_ns, set_clock, ...

`advance` stops at the first instant where an atom completes, *before*
handing the freed TPCs out again, so atoms launched at that instant compete
for them on equal terms with those already queued.
"""

from __future__ import annotations

import abc
import bisect
from typing import Any, NamedTuple

import attrs
import numpy as np

from drivers.vgpu.errors import InvalidArgument, UnknownContext, UnknownKernel
from drivers.vgpu.memory import DeviceMemory
from drivers.vgpu.presets import GpuSpec, get_preset
from drivers.vgpu.work import UNITS_PER_TPC, BlockCost, KernelDesc, check_mask

#: Virtual time after which nothing can happen; `advance(None)` runs up to it.
FOREVER_NS = 1 << 62
#: Priorities are within (-PRIORITY_LIMIT, PRIORITY_LIMIT).
PRIORITY_LIMIT = 1 << 31
#: How atoms of equal priority share the TPCs (see `reference.py`, "Dispatch"):
#: round robin over contexts, or first launched first (one hardware queue, as
#: under MPS, where whoever launches more wins).
DISPATCH_ORDERS = ("context", "launch")


class Completion(NamedTuple):
    """An atom finished at `time_ns`; `kernel_done` if it was its kernel's last."""

    time_ns: int
    atom_id: int
    kernel_id: int
    ctx: int
    kernel_done: bool


class BlockRecord(NamedTuple):
    """One block's run, from the optional block log."""

    atom_id: int
    block: int  # index in the kernel's grid
    tpc: int
    start_ns: int
    end_ns: int


@attrs.frozen
class GpuStats:
    """A snapshot of the device, for `gpu` (the nvidia-smi-like view) and experiments."""

    now_ns: int
    clock_mhz: int
    #: Requested clocks not yet in effect, as ``(effective_ns, clock_mhz)``.
    pending_clocks: tuple[tuple[int, int], ...]
    power_w: float
    energy_j: float
    busy_tpcs: int
    running_blocks: int
    #: Fraction of each TPC's capacity held by running blocks.
    tpc_occupancy: tuple[float, ...]
    bandwidth_demand_gbps: float
    blocks_dispatched: int
    blocks_completed: int
    atoms_launched: int
    atoms_completed: int
    kernels_completed: int
    memory_used_bytes: int


def _check_int(what: str, value: object) -> int:
    """`value` as a Python int; numpy integers are accepted, bools and floats are not."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise InvalidArgument(f"{what} must be an integer, got {value!r}")
    return int(value)


class VirtualGpu(abc.ABC):
    """A virtual GPU: contexts, memory, kernels and atoms over a timing back end."""

    def __init__(
        self,
        spec: GpuSpec | str = "a100",
        *,
        record_blocks: bool = False,
        dispatch_order: str = "context",
    ) -> None:
        self.spec = spec if isinstance(spec, GpuSpec) else get_preset(spec)
        self.record_blocks = bool(record_blocks)
        if dispatch_order not in DISPATCH_ORDERS:
            raise InvalidArgument(
                f"dispatch order must be one of {', '.join(DISPATCH_ORDERS)}, "
                f"got {dispatch_order!r}"
            )
        self.dispatch_order = dispatch_order
        self.memory = DeviceMemory(self.spec.memory_bytes)
        self._live_contexts: set[int] = set()
        self._next_ctx = 0
        # Kernels, by id.
        self._kernels: list[KernelDesc] = []
        self._costs: list[BlockCost] = []
        self._launched_begins: list[list[int]] = []
        self._launched_ends: list[list[int]] = []
        self._kernel_blocks_done: list[int] = []
        self._kernel_done_ns: list[int | None] = []
        self._results: dict[int, Any] = {}
        # Atoms, by id.
        self._atom_kernel: list[int] = []
        self._atom_ctx: list[int] = []
        self._atom_blocks: list[int] = []
        self._atom_done_ns: list[int | None] = []
        self._open_atoms: dict[int, int] = {}
        self._ctx_order: dict[int, int] = {}  # per context, the order of its last launch
        # Block costs by kernel descriptor: a driver registers the same
        # descriptor again for every run of a model (identity, not equality).
        self._cost_of: dict[int, tuple[KernelDesc, BlockCost]] = {}
        self._kernels_completed = 0

    # -- contexts ------------------------------------------------------------

    def create_context(self, quota_bytes: int | None = None, ctx: int | None = None) -> int:
        """A new context (a process or VM) with an optional memory quota; returns its id.
        `ctx` asks for a given free id (a restored VM gets its context back)."""
        if ctx is None:
            ctx = self._next_ctx
        elif type(ctx) is not int or not 0 <= ctx < 1 << 20 or ctx in self._live_contexts:
            raise InvalidArgument(f"context id {ctx!r} is not a free context id")
        self.memory.add_context(ctx, quota_bytes)
        self._next_ctx = max(self._next_ctx, ctx + 1)
        self._live_contexts.add(ctx)
        self._open_atoms[ctx] = 0
        self._ctx_order[ctx] = 0
        self._backend_add_context(ctx)
        return ctx

    def destroy_context(self, ctx: int) -> None:
        """Forget `ctx` and free its memory; refused while it has unfinished atoms."""
        self._check_context(ctx)
        if self._open_atoms[ctx]:
            raise InvalidArgument(
                f"context {ctx} still has {self._open_atoms[ctx]} unfinished atoms"
            )
        self.memory.remove_context(ctx)
        self._live_contexts.remove(ctx)

    @property
    def contexts(self) -> list[int]:
        return sorted(self._live_contexts)

    def _check_context(self, ctx: int) -> int:
        if isinstance(ctx, bool) or not isinstance(ctx, int) or ctx not in self._live_contexts:
            raise UnknownContext(f"no GPU context {ctx!r}")
        return ctx

    # -- kernels and atoms ---------------------------------------------------

    def add_kernel(self, kernel: KernelDesc) -> int:
        """Register a kernel instance; its atoms are launched by the returned id."""
        if not isinstance(kernel, KernelDesc):
            raise InvalidArgument(f"expected a KernelDesc, got {kernel!r}")
        cached = self._cost_of.get(id(kernel))
        if cached is None or cached[0] is not kernel:
            cached = self._cost_of[id(kernel)] = (kernel, BlockCost.of(kernel, self.spec))
        self._kernels.append(kernel)
        self._costs.append(cached[1])
        self._launched_begins.append([])
        self._launched_ends.append([])
        self._kernel_blocks_done.append(0)
        self._kernel_done_ns.append(None)
        return len(self._kernels) - 1

    def kernel(self, kernel_id: int) -> KernelDesc:
        return self._kernels[self._check_kernel(kernel_id)]

    def _check_kernel(self, kernel_id: int) -> int:
        if isinstance(kernel_id, bool) or not isinstance(kernel_id, int):
            raise UnknownKernel(f"no kernel {kernel_id!r}")
        if not 0 <= kernel_id < len(self._kernels):
            raise UnknownKernel(f"no kernel {kernel_id!r}")
        return kernel_id

    def launch(
        self,
        ctx: int,
        kernel: int | KernelDesc,
        begin: int = 0,
        end: int | None = None,
        mask: int | None = None,
        priority: int | None = None,
        order: int | None = None,
    ) -> int:
        """Queue blocks ``[begin, end)`` of `kernel` on the TPCs in `mask`; return the atom id.

        `kernel` is a kernel id from `add_kernel`, or a `KernelDesc`, which
        registers a new kernel instance (its id is `kernel_of(atom_id)`).
        `end` defaults to the end of the grid, `mask` to every TPC and
        `priority` (larger first) to the kernel's.  The atom competes for
        TPCs from the next `advance`, together with every atom launched at
        the same instant.  A kernel's atoms must not overlap.

        `order` is the atom's place in the ``launch`` dispatch order (default:
        now): a driver that emulates streams passes the time the host
        enqueued the kernel, which may be earlier than the launch into the
        device.  A context's orders must not decrease.
        """
        if type(ctx) is not int or ctx not in self._live_contexts:
            self._check_context(ctx)
        if type(kernel) is int and 0 <= kernel < len(self._kernels):
            kernel_id = kernel
            desc = self._kernels[kernel_id]
        elif isinstance(kernel, KernelDesc):
            desc, kernel_id = kernel, None
        else:
            kernel_id = self._check_kernel(kernel)
            desc = self._kernels[kernel_id]
        end = desc.grid_blocks if end is None else end
        if type(begin) is not int:
            begin = _check_int("atom begin", begin)
        if type(end) is not int:
            end = _check_int("atom end", end)
        if not 0 <= begin < end <= desc.grid_blocks:
            raise InvalidArgument(
                f"atom range [{begin}, {end}) of kernel {desc.name!r} must be non-empty "
                f"and within [0, {desc.grid_blocks})"
            )
        if mask is None:
            mask = self.spec.all_tpcs_mask
        elif type(mask) is not int or mask <= 0 or mask >> self.spec.n_tpcs:
            mask = check_mask(mask, self.spec.n_tpcs)
        if priority is None:
            priority = desc.priority
        elif type(priority) is not int:
            priority = _check_int("priority", priority)
        if not -PRIORITY_LIMIT < priority < PRIORITY_LIMIT:
            raise InvalidArgument(f"priority must be within (-2**31, 2**31), got {priority}")
        if order is None:
            order = self.now_ns
        elif type(order) is not int:
            order = _check_int("order", order)
        if not 0 <= order < FOREVER_NS:
            raise InvalidArgument(f"order must be within [0, {FOREVER_NS}), got {order}")
        if order < self._ctx_order[ctx]:
            raise InvalidArgument(
                f"order {order} of context {ctx} is below its previous launch's "
                f"{self._ctx_order[ctx]}: a context's orders must not decrease"
            )
        if kernel_id is not None:
            self._check_disjoint(kernel_id, begin, end)
        else:
            kernel_id = self.add_kernel(desc)
        begins, ends = self._launched_begins[kernel_id], self._launched_ends[kernel_id]
        if begins:
            i = bisect.bisect_left(begins, begin)
            begins.insert(i, begin)
            ends.insert(i, end)
        else:
            begins.append(begin)
            ends.append(end)
        self._ctx_order[ctx] = order
        atom_id = len(self._atom_kernel)
        self._atom_kernel.append(kernel_id)
        self._atom_ctx.append(ctx)
        self._atom_blocks.append(end - begin)
        self._atom_done_ns.append(None)
        self._open_atoms[ctx] += 1
        self._backend_launch(
            atom_id, ctx, priority, begin, end, mask, self._costs[kernel_id], order
        )
        return atom_id

    def _check_disjoint(self, kernel_id: int, begin: int, end: int) -> None:
        begins, ends = self._launched_begins[kernel_id], self._launched_ends[kernel_id]
        if not begins:
            return
        i = bisect.bisect_right(begins, begin)
        before_overlaps = i > 0 and ends[i - 1] > begin
        after_overlaps = i < len(begins) and begins[i] < end
        if before_overlaps or after_overlaps:
            j = i - 1 if before_overlaps else i
            raise InvalidArgument(
                f"atom [{begin}, {end}) of kernel {kernel_id} overlaps its launched "
                f"blocks [{begins[j]}, {ends[j]}): every block runs exactly once"
            )

    def kernel_of(self, atom_id: int) -> int:
        return self._atom_kernel[atom_id]

    def atom_done_ns(self, atom_id: int) -> int | None:
        return self._atom_done_ns[atom_id]

    def atom_busy_ns(self, atom_id: int) -> int:
        """The summed run time of the atom's blocks dispatched so far, in ns.

        Each block counts from its start to its end (fixed when it starts),
        so divided by the kernel's `blocks_per_tpc` it is the TPC time the
        atom occupies: what a policy charges a tenant for.
        """
        if type(atom_id) is not int:
            atom_id = _check_int("atom id", atom_id)
        if not 0 <= atom_id < len(self._atom_kernel):
            raise InvalidArgument(f"no atom {atom_id}")
        return self._backend_atom_busy_ns(atom_id)

    def kernel_done_ns(self, kernel_id: int) -> int | None:
        return self._kernel_done_ns[self._check_kernel(kernel_id)]

    def kernel_result(self, kernel_id: int) -> Any:
        """What a functional kernel's `fn` returned; InvalidArgument before it is done."""
        self._check_kernel(kernel_id)
        if kernel_id not in self._results:
            raise InvalidArgument(f"kernel {kernel_id} has no result (not done, or no fn)")
        return self._results[kernel_id]

    # -- time ----------------------------------------------------------------

    def set_clock(self, clock_mhz: int) -> int:
        """Request a new clock; it takes effect after the switch latency.  Returns when."""
        self.spec.check_clock(clock_mhz)
        effective_ns = self.now_ns + self.spec.switch_latency_ns
        self._backend_set_clock(clock_mhz, effective_ns)
        return effective_ns

    def advance(self, until_ns: int | None = None) -> list[Completion]:
        """Run until an atom completes or `until_ns` (None: until idle); return completions.

        With completions, `now_ns` is their instant and they are all
        returned, sorted by atom id; launches made now join the dispatch of
        the freed TPCs.  Without, `now_ns` is `until_ns` (or, with None, the
        instant the device went idle).
        """
        return self._run(until_ns, stop_on_completion=True)

    def run_batch(self, until_ns: int | None = None) -> list[Completion]:
        """Run the launched work to `until_ns` (None: until idle) in one compiled call."""
        return self._run(until_ns, stop_on_completion=False)

    def _run(self, until_ns: int | None, stop_on_completion: bool) -> list[Completion]:
        if until_ns is None:
            until_ns = FOREVER_NS
        until_ns = _check_int("until_ns", until_ns)
        if until_ns < self.now_ns:
            raise InvalidArgument(
                f"cannot advance to {until_ns} ns: it is already {self.now_ns} ns"
            )
        if until_ns > FOREVER_NS:
            raise InvalidArgument(f"until_ns must be at most {FOREVER_NS}")
        done = self._backend_run(until_ns, stop_on_completion)
        return [self._complete_atom(time_ns, atom_id) for time_ns, atom_id in done]

    def _complete_atom(self, time_ns: int, atom_id: int) -> Completion:
        kernel_id = self._atom_kernel[atom_id]
        ctx = self._atom_ctx[atom_id]
        self._atom_done_ns[atom_id] = time_ns
        self._open_atoms[ctx] -= 1
        self._kernel_blocks_done[kernel_id] += self._atom_blocks[atom_id]
        desc = self._kernels[kernel_id]
        kernel_done = self._kernel_blocks_done[kernel_id] == desc.grid_blocks
        if kernel_done:
            self._kernel_done_ns[kernel_id] = time_ns
            self._kernels_completed += 1
            if desc.fn is not None:
                self._results[kernel_id] = desc.fn()
        return Completion(time_ns, atom_id, kernel_id, ctx, kernel_done)

    # -- observation ---------------------------------------------------------

    def stats(self) -> GpuStats:
        units = self._backend_tpc_units()
        dispatched, completed = self._backend_counts()
        return GpuStats(
            now_ns=self.now_ns,
            clock_mhz=self.clock_mhz,
            pending_clocks=tuple(self._backend_pending_clocks()),
            power_w=self.power_w,
            energy_j=self.energy_j,
            busy_tpcs=self.busy_tpcs,
            running_blocks=self.running_blocks,
            tpc_occupancy=tuple(u / UNITS_PER_TPC for u in units),
            bandwidth_demand_gbps=self._backend_demand_mbps() / 1000.0,
            blocks_dispatched=dispatched,
            blocks_completed=completed,
            atoms_launched=len(self._atom_kernel),
            atoms_completed=sum(t is not None for t in self._atom_done_ns),
            kernels_completed=self._kernels_completed,
            memory_used_bytes=self.memory.used_total_bytes,
        )

    def pending_clocks(self) -> tuple:
        """Clock changes asked for and not yet in effect (cheap: `stats` sums the atoms)."""
        return tuple(self._backend_pending_clocks())

    def tpc_occupancy(self) -> list[float]:
        """Per TPC, the fraction of its capacity held by running blocks."""
        return [u / UNITS_PER_TPC for u in self._backend_tpc_units()]

    @property
    def blocks_dispatched(self) -> int:
        return self._backend_counts()[0]

    @property
    def power_w(self) -> float:
        return self.spec.power_w(self.busy_tpcs, self.clock_mhz, self._backend_demand_mbps())

    def block_log(self) -> list[BlockRecord]:
        """Every block dispatched so far, in dispatch order (needs `record_blocks=True`)."""
        if not self.record_blocks:
            raise InvalidArgument("the block log is off; create the device with record_blocks=True")
        return self._backend_block_log()

    # -- the timing back end -------------------------------------------------

    @property
    @abc.abstractmethod
    def now_ns(self) -> int: ...

    @property
    @abc.abstractmethod
    def clock_mhz(self) -> int: ...

    @property
    @abc.abstractmethod
    def energy_j(self) -> float: ...

    @property
    @abc.abstractmethod
    def busy_tpcs(self) -> int: ...

    @property
    @abc.abstractmethod
    def running_blocks(self) -> int: ...

    @abc.abstractmethod
    def _backend_add_context(self, ctx: int) -> None: ...

    @abc.abstractmethod
    def _backend_launch(
        self,
        atom_id: int,
        ctx: int,
        priority: int,
        begin: int,
        end: int,
        mask: int,
        cost: BlockCost,
        order: int,
    ) -> None: ...

    @abc.abstractmethod
    def _backend_set_clock(self, clock_mhz: int, effective_ns: int) -> None: ...

    @abc.abstractmethod
    def _backend_run(self, until_ns: int, stop_on_completion: bool) -> list[tuple[int, int]]:
        """Run the event loop; return ``(time_ns, atom_id)`` completions, sorted."""

    @abc.abstractmethod
    def _backend_tpc_units(self) -> list[int]: ...

    @abc.abstractmethod
    def _backend_demand_mbps(self) -> int: ...

    @abc.abstractmethod
    def _backend_atom_busy_ns(self, atom_id: int) -> int: ...

    @abc.abstractmethod
    def _backend_counts(self) -> tuple[int, int]:
        """Blocks dispatched and blocks completed."""

    @abc.abstractmethod
    def _backend_pending_clocks(self) -> list[tuple[int, int]]: ...

    @abc.abstractmethod
    def _backend_block_log(self) -> list[BlockRecord]: ...

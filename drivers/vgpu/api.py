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

Ids and memory
--------------
By default a device keeps every atom's and kernel's bookkeeping, and never
reuses an id: experiments and tests read any atom or kernel after the run.
A long-lived driver creates it with ``keep_history=False`` (the booted vGPU
driver does), and then what it holds is bounded by the work in flight:

* an atom's bookkeeping lives from its launch until its owner, having seen
  its completion, calls `release_atoms`; its id then names a new atom;
* a kernel's lives until its owner calls `release_kernel` (after reading
  its completion time or result), or its context is destroyed;
* a released id is reused lowest first, so runs stay deterministic.  The
  engine breaks dispatch ties by atom id, so an id is reused only where
  the new atom still compares after every queued atom it could tie with
  (`_new_atom_id`); completions at one instant come back in launch order.
  Results are exactly those of a device that never reuses an id.

A method given an atom or kernel id that is not live (never handed out, or
released) raises; an id released and handed out again names the new atom or
kernel, so an owner must not ask about what it has released.
"""

from __future__ import annotations

import abc
import bisect
import heapq
from collections.abc import Iterable
from typing import Any, NamedTuple, cast

import attrs
import numpy as np

from drivers.vgpu.errors import InvalidArgument, UnknownContext, UnknownKernel
from drivers.vgpu.memory import DeviceMemory
from drivers.vgpu.presets import GpuSpec, get_preset
from drivers.vgpu.work import UNITS_PER_TPC, BlockCost, KernelDesc, check_mask

#: Virtual time after which nothing can happen; `advance(None)` runs up to it.
FOREVER_NS = 1 << 62
#: Descriptors whose block costs an engine without history keeps once no
#: kernel of theirs is live (`add_kernel`): a driver's programs launch the
#: same few graphs again and again.
IDLE_COSTS_KEPT = 4096
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


def set_by_id(table: list, index: int, value: Any) -> None:
    """Set `table[index]`; an index one past the end appends (ids are handed out densely)."""
    if index < len(table):
        table[index] = value
    else:
        table.append(value)


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
        keep_history: bool = True,
    ) -> None:
        self.spec = spec if isinstance(spec, GpuSpec) else get_preset(spec)
        self.record_blocks = bool(record_blocks)
        if dispatch_order not in DISPATCH_ORDERS:
            raise InvalidArgument(
                f"dispatch order must be one of {', '.join(DISPATCH_ORDERS)}, "
                f"got {dispatch_order!r}"
            )
        self.dispatch_order = dispatch_order
        #: Keep every atom's and kernel's bookkeeping and never reuse an id;
        #: False: bounded by the work in flight (see "Ids and memory").
        self.keep_history = bool(keep_history)
        self.memory = DeviceMemory(self.spec.memory_bytes)
        self._live_contexts: set[int] = set()
        self._next_ctx = 0
        # Kernels, by id; a released kernel's slots hold None until its id is reused.
        self._kernels: list[KernelDesc | None] = []
        self._costs: list[BlockCost | None] = []
        self._launched_begins: list[list[int]] = []
        self._launched_ends: list[list[int]] = []
        self._kernel_blocks_done: list[int] = []
        self._kernel_done_ns: list[int | None] = []
        self._kernel_ctx: list[int] = []  # the context of its first atom (-1: none yet)
        self._results: dict[int, Any] = {}
        self._free_kernels: list[int] = []  # a heap of released kernel ids
        # Atoms, by id; a released atom's kernel is -1 until its id is reused.
        self._atom_kernel: list[int] = []
        self._atom_ctx: list[int] = []
        self._atom_blocks: list[int] = []
        self._atom_done_ns: list[int | None] = []
        # Without history: each atom's launch number (completions at one
        # instant come back in launch order) and tie class, the atoms in
        # flight of each tie class with their FIFO, and the released ids.
        self._atom_seq: list[int] = []
        self._atom_tie: list[tuple[int, int]] = []
        self._ties: dict[tuple[int, int], dict[int, tuple[int, int, int, int]]] = {}
        self._free_atoms: list[int] = []  # ascending
        self._atoms_launched = 0
        self._atoms_completed = 0
        self._open_atoms: dict[int, int] = {}
        self._ctx_order: dict[int, int] = {}  # per context, the order of its last launch
        # Block costs by kernel descriptor: a driver registers the same
        # descriptor again for every run of a model (identity, not equality).
        # Without history, an entry lives while a kernel of it does, and
        # then while it is among the last IDLE_COSTS_KEPT idle ones.
        self._cost_of: dict[int, tuple[KernelDesc, BlockCost]] = {}
        self._cost_users: dict[int, int] = {}
        self._idle_costs: dict[int, None] = {}  # in the order they fell idle
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
        """Forget `ctx` and free its memory; refused while it has unfinished atoms.
        Without history, the kernels first launched in it are released too."""
        self._check_context(ctx)
        if self._open_atoms[ctx]:
            raise InvalidArgument(
                f"context {ctx} still has {self._open_atoms[ctx]} unfinished atoms"
            )
        self.memory.remove_context(ctx)
        self._live_contexts.remove(ctx)
        del self._open_atoms[ctx], self._ctx_order[ctx]
        if not self.keep_history:
            for kernel_id, owner in enumerate(self._kernel_ctx):
                if owner == ctx and not self._kernel_in_flight(kernel_id):
                    self._forget_kernel(kernel_id)

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
        key = id(kernel)
        cached = self._cost_of.get(key)
        if cached is None:  # the entry holds the descriptor: its id is not reused meanwhile
            cached = self._cost_of[key] = (kernel, BlockCost.of(kernel, self.spec))
        if not self.keep_history:
            self._cost_users[key] = self._cost_users.get(key, 0) + 1
            self._idle_costs.pop(key, None)
        free = self._free_kernels
        if free:  # a released id: `_forget_kernel` left its bookkeeping fresh
            kernel_id = heapq.heappop(free)
            self._kernels[kernel_id] = kernel
            self._costs[kernel_id] = cached[1]
            return kernel_id
        kernel_id = len(self._kernels)
        self._kernels.append(kernel)
        self._costs.append(cached[1])
        self._launched_begins.append([])
        self._launched_ends.append([])
        self._kernel_blocks_done.append(0)
        self._kernel_done_ns.append(None)
        self._kernel_ctx.append(-1)
        return kernel_id

    def release_kernel(self, kernel_id: int) -> None:
        """Forget a kernel: its completion time, its result, its id (which may
        then name a new kernel).  Refused while atoms of it are in flight.
        With history (the default) the kernel is kept and this does nothing."""
        self._check_kernel(kernel_id)
        if self.keep_history:
            return
        if self._kernel_in_flight(kernel_id):
            raise InvalidArgument(f"kernel {kernel_id} has atoms in flight")
        self._forget_kernel(kernel_id)

    def _kernel_in_flight(self, kernel_id: int) -> bool:
        begins, ends = self._launched_begins[kernel_id], self._launched_ends[kernel_id]
        if len(begins) == 1:  # one range: a kernel the sharing loop ran (`kernel_finished`)
            launched = ends[0] - begins[0]
        else:
            launched = sum(end - begin for begin, end in zip(begins, ends, strict=True))
        return launched != self._kernel_blocks_done[kernel_id]

    def _forget_kernel(self, kernel_id: int) -> None:
        desc = cast(KernelDesc, self._kernels[kernel_id])
        key = id(desc)
        users = self._cost_users.pop(key) - 1
        if users:
            self._cost_users[key] = users
        elif desc.fn is not None:  # a batch's own computation, with its inputs: not kept
            del self._cost_of[key]
        else:  # kept a while: a driver launches the same descriptors again
            self._idle_costs[key] = None
            if len(self._idle_costs) > IDLE_COSTS_KEPT:
                oldest = next(iter(self._idle_costs))
                del self._idle_costs[oldest], self._cost_of[oldest]
        self._kernels[kernel_id] = self._costs[kernel_id] = None
        self._launched_begins[kernel_id] = []
        self._launched_ends[kernel_id] = []
        self._kernel_blocks_done[kernel_id] = 0
        self._kernel_done_ns[kernel_id] = None
        self._kernel_ctx[kernel_id] = -1
        self._results.pop(kernel_id, None)
        heapq.heappush(self._free_kernels, kernel_id)

    def kernel(self, kernel_id: int) -> KernelDesc:
        desc = self._kernels[self._check_kernel(kernel_id)]
        assert desc is not None  # checked live
        return desc

    def _check_kernel(self, kernel_id: int) -> int:
        if isinstance(kernel_id, bool) or not isinstance(kernel_id, int):
            raise UnknownKernel(f"no kernel {kernel_id!r}")
        if not 0 <= kernel_id < len(self._kernels):
            raise UnknownKernel(f"no kernel {kernel_id!r}")
        if self._kernels[kernel_id] is None:
            raise UnknownKernel(f"no kernel {kernel_id}: it was released")
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
            known = self._kernels[kernel_id]
            if known is None:
                self._check_kernel(kernel_id)  # raises: released
            desc = cast(KernelDesc, known)
        elif isinstance(kernel, KernelDesc):
            desc, kernel_id = kernel, None
        else:
            kernel_id = self._check_kernel(kernel)
            desc = cast(KernelDesc, self._kernels[kernel_id])
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
        if self._kernel_ctx[kernel_id] < 0:
            self._kernel_ctx[kernel_id] = ctx
        cost = cast(BlockCost, self._costs[kernel_id])
        if self.keep_history:
            atom_id = len(self._atom_kernel)
        else:
            atom_id = self._new_atom_id(ctx, priority, order, cost.units, mask)
        set_by_id(self._atom_kernel, atom_id, kernel_id)
        set_by_id(self._atom_ctx, atom_id, ctx)
        set_by_id(self._atom_blocks, atom_id, end - begin)
        set_by_id(self._atom_done_ns, atom_id, None)
        self._open_atoms[ctx] += 1
        self._atoms_launched += 1
        self._backend_launch(atom_id, ctx, priority, begin, end, mask, cost, order)
        return atom_id

    def _new_atom_id(self, ctx: int, priority: int, order: int, units: int, mask: int) -> int:
        """Without history: the lowest released id above every queued atom the
        new one could tie with, else a new id.  The engine breaks ties between
        the heads of its FIFOs (one per context, priority, block size and
        mask; launch order within one) by atom id, so the new atom must
        compare after the queued atoms of other FIFOs that it could tie with:
        of equal priority, and equal order (launch order) or the same
        context (round robin)."""
        tie = (priority, order if self.dispatch_order == "launch" else ctx)
        fifo = (ctx, priority, units, mask)
        floor = -1
        members = self._ties.get(tie)
        if members is None:
            members = self._ties[tie] = {}
        else:
            for atom, its_fifo in members.items():
                if atom > floor and its_fifo != fifo and self._backend_queued(atom):
                    floor = atom
        free = self._free_atoms
        i = bisect.bisect_right(free, floor)
        atom_id = free.pop(i) if i < len(free) else len(self._atom_kernel)
        members[atom_id] = fifo
        set_by_id(self._atom_tie, atom_id, tie)
        set_by_id(self._atom_seq, atom_id, self._atoms_launched)
        return atom_id

    def release_atoms(self, atom_ids: Iterable[int]) -> None:
        """Forget completed atoms, whose completions their owner has handled:
        their ids may name new atoms from now on.  With history (the default)
        they are kept and this does nothing."""
        atom_ids = list(atom_ids)
        for atom_id in atom_ids:
            self._check_atom(atom_id)
            if self._atom_done_ns[atom_id] is None:
                raise InvalidArgument(f"atom {atom_id} is still in flight")
        if len(set(atom_ids)) != len(atom_ids):
            raise InvalidArgument(f"atoms released twice: {sorted(atom_ids)}")
        if self.keep_history:
            return
        for atom_id in atom_ids:
            self._atom_kernel[atom_id] = -1
            self._atom_done_ns[atom_id] = None
            bisect.insort(self._free_atoms, atom_id)

    def _check_atom(self, atom_id: object) -> int:
        """`atom_id` if it names a live atom (launched, and not released)."""
        if type(atom_id) is not int:
            atom_id = _check_int("atom id", atom_id)
        if not 0 <= atom_id < len(self._atom_kernel) or (
            not self.keep_history and self._atom_kernel[atom_id] < 0
        ):
            raise InvalidArgument(f"no atom {atom_id} (never launched, or released)")
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
        return self._atom_kernel[self._check_atom(atom_id)]

    def atom_done_ns(self, atom_id: int) -> int | None:
        return self._atom_done_ns[self._check_atom(atom_id)]

    def atom_busy_ns(self, atom_id: int) -> int:
        """The summed run time of the atom's blocks dispatched so far, in ns.

        Each block counts from its start to its end (fixed when it starts),
        so divided by the kernel's `blocks_per_tpc` it is the TPC time the
        atom occupies: what a policy charges a tenant for.
        """
        return self._backend_atom_busy_ns(self._check_atom(atom_id))

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
        if len(done) > 1 and not self.keep_history:  # ids do not follow launches
            seq = self._atom_seq
            done.sort(key=lambda c: (c[0], seq[c[1]]))
        return [self._complete_atom(time_ns, atom_id) for time_ns, atom_id in done]

    def kernel_finished(self, kernel_id: int, time_ns: int) -> None:
        """Kernel `kernel_id` finished at `time_ns`, run by an owner that
        launches atoms on the engine's tables itself (the sharing loop,
        `drivers/vgpu/sharing`): its completion time and result, as if its
        atoms had been launched through `launch`."""
        self._check_kernel(kernel_id)
        desc = cast(KernelDesc, self._kernels[kernel_id])
        if self._kernel_done_ns[kernel_id] is not None:
            raise InvalidArgument(f"kernel {kernel_id} finished already")
        self._kernel_blocks_done[kernel_id] = desc.grid_blocks
        self._launched_begins[kernel_id] = [0]
        self._launched_ends[kernel_id] = [desc.grid_blocks]
        self._kernel_done_ns[kernel_id] = time_ns
        self._kernels_completed += 1
        if desc.fn is not None:
            self._results[kernel_id] = desc.fn()

    def _complete_atom(self, time_ns: int, atom_id: int) -> Completion:
        kernel_id = self._atom_kernel[atom_id]
        ctx = self._atom_ctx[atom_id]
        self._atom_done_ns[atom_id] = time_ns
        self._atoms_completed += 1
        self._open_atoms[ctx] -= 1
        if not self.keep_history:
            tie = self._atom_tie[atom_id]
            members = self._ties[tie]
            del members[atom_id]
            if not members:
                del self._ties[tie]
        self._kernel_blocks_done[kernel_id] += self._atom_blocks[atom_id]
        desc = cast(KernelDesc, self._kernels[kernel_id])
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
            atoms_launched=self._atoms_launched,
            atoms_completed=self._atoms_completed,
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
    def _backend_queued(self, atom_id: int) -> bool:
        """Whether the atom has blocks not yet dispatched."""

    @abc.abstractmethod
    def _backend_counts(self) -> tuple[int, int]:
        """Blocks dispatched and blocks completed."""

    @abc.abstractmethod
    def _backend_pending_clocks(self) -> list[tuple[int, int]]: ...

    @abc.abstractmethod
    def _backend_block_log(self) -> list[BlockRecord]: ...

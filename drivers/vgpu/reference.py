"""The reference model of the vGPU engine: plain Python, written to be read (`drivers/vgpu`).

This is the specification of block dispatch, timing, clocks and power that
the numba engine (`engine.py`) implements fast.  The tests run both on the
same seeded workloads and require identical results: every block's TPC,
start and end, and the energy to 1e-9.  `malv bench` uses it as the baseline.

The rules
---------
*Dispatch.*  At an instant, once the blocks ending then are removed, the
TPCs take blocks in rounds: each round visits TPCs 0, 1, 2, ... and each TPC
takes at most one block, until a round places nothing.  A TPC takes the next
block of the first atom in *dispatch order* that has blocks left, includes it
in its mask and whose block fits its free capacity.  Dispatch order is:
higher priority first; among equal priorities, round robin over contexts —
the context served least recently first (never-served first, then the lower
context id); within a context, launch order.  With ``dispatch_order="launch"``
equal priorities go in launch order across contexts too (one FIFO, as MPS):
by the atom's `order` (its launch instant unless the driver says when the
host enqueued it), then launch order.  (Launch order is atom id order on a
device that never reuses ids; see api.py, "Ids and memory".)  Running
blocks are never preempted.  `advance` returns at a completion before that instant's dispatch
(it runs when the loop resumes), so atoms launched then take part in it.

*Timing, fixed when a block starts.*  With ``demand`` the summed bandwidth
demand of the running blocks once every block starting at this instant has
started (blocks that start together see the same contention), and ``f``
the clock::

    duration = ceil(compute_ns * f_max / f)
             + (mem_ns                           if demand <= bandwidth
                else ceil(mem_ns * demand / bandwidth))

all in integer ns (see `work.BlockCost`).  A later clock change or a change
in contention does not alter a running block's end.

*Clocks.*  `set_clock` at t takes effect at t + switch latency; requests
take effect in the order made.  At an instant, clock changes apply first,
then blocks end, then blocks start.

*Power.*  Constant between events: `GpuSpec.power_w` of the busy TPC count,
the clock and the bandwidth demand.  Energy adds ``power * dt * 1e-9`` J at
every event instant.
"""

from __future__ import annotations

import heapq
from collections import deque

import attrs

from drivers.vgpu.api import FOREVER_NS, BlockRecord, VirtualGpu, set_by_id
from drivers.vgpu.presets import GpuSpec
from drivers.vgpu.work import UNITS_PER_TPC, BlockCost


@attrs.define
class _QueuedAtom:
    atom_id: int
    ctx: int
    priority: int
    next_block: int
    end: int
    mask: int
    cost: BlockCost
    order: int = 0
    seq: int = 0  # launch order
    running: int = 0


class ReferenceEngine(VirtualGpu):
    """The vGPU's timing back end as a plain-Python event loop."""

    def __init__(
        self,
        spec: GpuSpec | str = "a100",
        *,
        record_blocks: bool = False,
        dispatch_order: str = "context",
        keep_history: bool = True,
    ) -> None:
        super().__init__(
            spec, record_blocks=record_blocks, dispatch_order=dispatch_order,
            keep_history=keep_history,
        )  # fmt: skip
        n = self.spec.n_tpcs
        self._now = 0
        self._clock = self.spec.max_clock_mhz
        self._pending_clocks: deque[tuple[int, int]] = deque()
        self._energy = 0.0
        self._free_units = [UNITS_PER_TPC] * n
        self._blocks_on = [0] * n
        self._demand = 0
        self._running: list[tuple[int, int, _QueuedAtom, int]] = []  # (end, seq, atom, tpc)
        self._queued: list[_QueuedAtom] = []  # atoms with blocks not yet dispatched
        self._queued_ids: set[int] = set()  # their ids
        self._last_served: dict[int, int] = {}
        self._seq = 0  # blocks dispatched; also the round-robin clock
        self._seq_of_end = 0  # tie-breaker in the heap
        self._seq_of_launch = 0  # atoms launched
        self._completed = 0
        self._log: list[BlockRecord] = []
        self._busy_ns: list[int] = []  # per atom id, the summed run time of its blocks

    # -- the event loop ----------------------------------------------------

    def _backend_run(self, until_ns: int, stop_on_completion: bool) -> list[tuple[int, int]]:
        done: list[tuple[int, int]] = []
        while True:
            self._dispatch()
            t = self._next_event_ns()
            if t == FOREVER_NS or t > until_ns:  # nothing more happens by `until_ns`
                if until_ns != FOREVER_NS:
                    self._integrate_to(until_ns)
                return done
            self._integrate_to(t)
            while self._pending_clocks and self._pending_clocks[0][0] == t:
                self._clock = self._pending_clocks.popleft()[1]
            finished: list[int] = []
            while self._running and self._running[0][0] == t:
                _, _, atom, tpc = heapq.heappop(self._running)
                self._end_block(atom, tpc)
                if atom.running == 0 and atom.next_block == atom.end:
                    finished.append(atom.atom_id)
            done.extend((t, atom_id) for atom_id in sorted(finished))
            if stop_on_completion and finished:
                return done

    def _next_event_ns(self) -> int:
        t = FOREVER_NS
        if self._running:
            t = self._running[0][0]
        if self._pending_clocks:
            t = min(t, self._pending_clocks[0][0])
        return t

    def _integrate_to(self, t: int) -> None:
        power = self.spec.power_w(self.busy_tpcs, self._clock, self._demand)
        self._energy += power * (t - self._now) * 1e-9
        self._now = t

    # -- dispatch ----------------------------------------------------------

    def _dispatch(self) -> None:
        started: list[tuple[_QueuedAtom, int, int]] = []
        while True:
            placed = False
            for tpc in range(self.spec.n_tpcs):
                atom = self._choose_atom(tpc)
                if atom is not None:
                    started.append((atom, atom.next_block, tpc))
                    self._take_block(atom, tpc)
                    placed = True
            if not placed:
                break
        # Every block started at this instant sees the same contention.
        for atom, block, tpc in started:
            end = self._now + self._block_duration_ns(atom.cost)
            self._busy_ns[atom.atom_id] += end - self._now
            heapq.heappush(self._running, (end, self._seq_of_end, atom, tpc))
            self._seq_of_end += 1
            if self.record_blocks:
                self._log.append(BlockRecord(atom.atom_id, block, tpc, self._now, end))

    def _choose_atom(self, tpc: int) -> _QueuedAtom | None:
        candidates = [
            atom
            for atom in self._queued
            if atom.mask >> tpc & 1 and atom.cost.units <= self._free_units[tpc]
        ]
        if not candidates:
            return None
        if self.dispatch_order == "launch":
            return min(candidates, key=lambda a: (-a.priority, a.order, a.seq))
        return min(
            candidates,
            key=lambda a: (-a.priority, self._last_served[a.ctx], a.ctx, a.seq),
        )

    def _take_block(self, atom: _QueuedAtom, tpc: int) -> None:
        atom.next_block += 1
        if atom.next_block == atom.end:
            self._queued.remove(atom)
            self._queued_ids.remove(atom.atom_id)
        self._last_served[atom.ctx] = self._seq
        self._seq += 1
        self._blocks_on[tpc] += 1
        self._free_units[tpc] -= atom.cost.units
        self._demand += atom.cost.demand_mbps
        atom.running += 1

    def _end_block(self, atom: _QueuedAtom, tpc: int) -> None:
        self._blocks_on[tpc] -= 1
        self._free_units[tpc] += atom.cost.units
        self._demand -= atom.cost.demand_mbps
        atom.running -= 1
        self._completed += 1

    def _block_duration_ns(self, cost: BlockCost) -> int:
        spec = self.spec
        compute_ns = -(-cost.compute_ns * spec.max_clock_mhz // self._clock)
        if self._demand <= spec.bandwidth_mbps:
            mem_ns = cost.mem_ns
        else:
            mem_ns = -(-cost.mem_ns * self._demand // spec.bandwidth_mbps)
        return compute_ns + mem_ns

    # -- the rest of the back end ------------------------------------------

    def _backend_add_context(self, ctx: int) -> None:
        self._last_served[ctx] = -1

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
    ) -> None:
        seq = self._seq_of_launch
        self._seq_of_launch += 1
        self._queued.append(_QueuedAtom(atom_id, ctx, priority, begin, end, mask, cost, order, seq))
        self._queued_ids.add(atom_id)
        set_by_id(self._busy_ns, atom_id, 0)

    def _backend_set_clock(self, clock_mhz: int, effective_ns: int) -> None:
        self._pending_clocks.append((effective_ns, clock_mhz))

    def _backend_tpc_units(self) -> list[int]:
        return [UNITS_PER_TPC - free for free in self._free_units]

    def _backend_demand_mbps(self) -> int:
        return self._demand

    def _backend_atom_busy_ns(self, atom_id: int) -> int:
        return self._busy_ns[atom_id]

    def _backend_queued(self, atom_id: int) -> bool:
        return atom_id in self._queued_ids

    def _backend_counts(self) -> tuple[int, int]:
        return self._seq, self._completed

    def _backend_pending_clocks(self) -> list[tuple[int, int]]:
        return list(self._pending_clocks)

    def _backend_block_log(self) -> list[BlockRecord]:
        return list(self._log)

    @property
    def now_ns(self) -> int:
        return self._now

    @property
    def clock_mhz(self) -> int:
        return self._clock

    @property
    def energy_j(self) -> float:
        return self._energy

    @property
    def busy_tpcs(self) -> int:
        return sum(1 for blocks in self._blocks_on if blocks)

    @property
    def running_blocks(self) -> int:
        return len(self._running)

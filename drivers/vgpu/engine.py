"""The vGPU engine: block dispatch, timing, clocks and power, compiled with numba (`drivers/vgpu`).

This is the hot path of the virtual GPU.  In its default *block* mode it
implements exactly the rules written out in `reference.py` (dispatch order,
integer timing fixed at block start, clock switch latency, piecewise-constant
power); the tests hold the two to identical results.  `Engine` is the Python
face: it subclasses `api.VirtualGpu`, which validates every request, and
keeps the device state in numpy tables that the `@njit(cache=True)`
functions below update in place.

Principles
----------
* The state is struct-of-arrays: each table is a 2-D int64 array with one
  row per field (``atoms[A_NEXT, atom]``), so a field is contiguous and a
  compiled function takes a handful of tables, not dozens of arrays.
* The event loop (`_run`) is one page: take the next instant, apply clock
  changes, end the blocks ending then, start blocks.  No Python objects.
* Running blocks sit in a 4-ary min-heap keyed by end time, by groups: the
  blocks of one atom started at one instant end together.
* Queued atoms sit in FIFOs, one per (context, priority, block size, mask),
  linked through the atom table.  All atoms of a FIFO fit the same TPCs, so
  only its head can be dispatched.  The FIFOs are indexed by TPC: each TPC
  lists the non-empty FIFOs whose mask includes it, by priority (and in
  launch order by their heads' order), so choosing work for a TPC looks
  only at those, however many other masks are queued, and stops at the
  first that fits (launch order) or after the first priority level that has
  work for it (round robin).
* A TPC is examined only when something may have changed for it: a block on
  it ended, or an atom that includes it was launched.  A TPC that could take
  nothing stays unable to until one of those happens (dispatch removes or
  reorders candidates, never adds one), so this is exact, not a heuristic.
* Growth (more atoms, FIFOs, contexts, clock requests, log space) happens in
  Python between compiled calls (`Engine.ensure_capacity` for compiled
  callers); the loop stops and asks before the block log could overflow.
  Without history (`api.py`, "Ids and memory") atom ids and FIFO ids are
  reused, so the tables stop growing once the work in flight does.

Wave mode
---------
``Engine(spec, mode="wave")`` (``sc[S_WAVE] = 1``; the same compiled `_run`)
deals work a wave at a time instead of a block at a time.  At an instant,
the first FIFO in dispatch order whose head fits on a TPC to examine starts
in one step every block of its head that its TPCs have room for: one group,
one heap entry and one slot per TPC, however many blocks.  Its blocks are
spread as block-exact rounds would spread them if it were alone.  Then the
next FIFO, until nothing fits.  Priorities hold per TPC as in block mode
(the step's FIFO is the first for every TPC it fills); running blocks are
never preempted; timing, `A_BUSY_NS` and energy follow the same formulas.

What changes is the order among equal-priority atoms waiting at one
instant: round robin (or launch order) picks a whole wave per turn, where
block mode deals one block per context per turn, and so blocks may land on
other slots.  The two modes give identical results whenever no TPC is
wanted by two queued atoms at once (e.g. one atom queued at a time, or atoms
on disjoint masks), and identical completion times when every queued block
starts at once (whole waves that fit); `tests/vgpu/test_wave_mode.py` checks
both, and bounds the move of completion-time percentiles on mixed workloads.
The block log works in both modes: one record per block.
"""

from __future__ import annotations

import heapq
from typing import NamedTuple

import numpy as np
from numba import njit

from drivers.vgpu import numba_cache  # noqa: F401  (before any @njit here: see its doc)
from drivers.vgpu.api import FOREVER_NS, BlockRecord, VirtualGpu
from drivers.vgpu.errors import InvalidArgument
from drivers.vgpu.presets import GpuSpec
from drivers.vgpu.work import MAX_BLOCKS_PER_TPC, UNITS_PER_TPC, BlockCost

# Integer scalars, in `sc`.
S_NOW = 0  # virtual time, ns
S_CLOCK = 1  # current clock, MHz
S_FMAX = 2  # max clock, MHz
S_BW = 3  # device bandwidth, MB/s
S_SEQ = 4  # blocks dispatched so far; also the round-robin clock
S_BUSY = 5  # TPCs with at least one block
S_DEMAND = 6  # summed bandwidth demand of running blocks, MB/s
S_NGROUPS = 7  # groups in the heap
S_RUNNING = 8  # running blocks
S_NDIRTY = 9  # TPCs to examine at the next dispatch
S_CLK_HEAD = 10  # clock requests: next to apply
S_CLK_TAIL = 11  # clock requests: one past the last
S_LOG_ON = 12
S_LOG_N = 13
S_NDONE = 14  # atoms completed during the current run
S_COMPLETED = 15  # blocks completed so far
S_NQ = 16  # non-empty FIFOs
S_NTPC = 17
S_FREE_SLOT = 18  # head of the free list of block slots
S_PASS = 19  # dispatch passes so far
S_NPASS = 20  # atoms that started blocks in the current pass
S_BY_LAUNCH = 21  # 1: equal priorities go in launch order, not round robin
S_WAVE = 22  # 1: wave mode (a FIFO head starts a whole wave per step), 0: block-exact
N_SCALARS = 23

# Float scalars, in `fs`.
F_ENERGY = 0  # J
F_IDLE_W = 1
F_DYN_W = 2  # dynamic power of one busy TPC at the current clock
F_MEM_W_PER_MBPS = 3
N_FLOATS = 4

# Rows of the atom table, indexed by atom id.
A_UNITS = 0  # TPC capacity units one block holds
A_COMPUTE = 1  # compute-bound ns per block at f_max
A_MEM = 2  # memory-bound ns per block, uncontended
A_DEMAND = 3  # MB/s one running block draws
A_NEXT = 4  # next block to dispatch
A_END = 5  # one past the atom's last block
A_RUNNING = 6
A_CTX = 7
A_LINK = 8  # next atom in the same FIFO, -1 at the tail
A_DONE_NS = 9  # completion time, -1 until then
A_PASS = 10  # the last dispatch pass that started blocks of the atom
A_GROUP = 11  # first slot of the blocks it started in that pass
A_GROUP_END = 12  # when they end
A_PASS_BLOCKS = 13  # blocks it started in that pass
A_BUSY_NS = 14  # summed run time of its blocks so far
A_ORDER = 15  # its place in the launch dispatch order (then its id)
N_ATOM_ROWS = 16

# Rows of the FIFO table, indexed by FIFO id.
Q_PRIO = 0
Q_CTX = 1
Q_UNITS = 2
Q_HEAD = 3
Q_TAIL = 4
Q_NTPCS = 5  # TPCs in its mask: the first entries of its `fifo_tpcs` row
N_FIFO_ROWS = 6

# Rows of the TPC table.
T_FREE = 0  # free capacity units
T_BLOCKS = 1  # running blocks
T_DIRTY = 2  # 1 while listed in T_DIRTY_LIST
T_DIRTY_LIST = 3  # TPCs to examine (first S_NDIRTY entries)
# A lower bound on the smallest block of the queued atoms that may use the
# TPC.  A TPC with less free capacity can take nothing and is not scanned.
# Launches lower it at once; a scan sets it exactly; atoms running out only
# leave it (safely) low.
T_MIN_UNITS = 4
T_NFIFOS = 5  # non-empty FIFOs whose mask includes the TPC: its `tpc_fifos` row
# Wave mode's working rows, by place, not by TPC (as T_DIRTY_LIST).
T_CAND = 6  # by place in T_DIRTY_LIST: that TPC's candidate FIFO, or _STALE
T_WAVE_TPC = 7  # a wave step's TPCs, ascending
T_WAVE_BLOCKS = 8  # their room in blocks, then the blocks they take
N_TPC_ROWS = 9

# Rows of the block slots, the heap, the clock requests and the block log.
SL_ITEM = 0  # atom << 8 | tpc
SL_NEXT = 1  # next slot of the same group, or of the free list; -1 ends
SL_COUNT = 2  # blocks of the atom on the TPC that the slot stands for
H_END = 0
H_SLOT = 1  # first slot of the group
K_TIME = 0
K_MHZ = 1
L_ATOM, L_BLOCK, L_TPC, L_START, L_END = range(5)

# What `_run` stopped for.
RUN_REACHED = 0  # reached `until`, or nothing left to happen
RUN_COMPLETIONS = 1  # atoms completed (stop-on-completion mode)
RUN_LOG_FULL = 2  # the block log needs more room before the next dispatch

_STALE = -2  # a T_CAND entry to look up again

#: The dispatch modes, by their value of S_WAVE.
MODES = ("block", "wave")

_TPC_BITS = 8  # at most 256 TPCs
_SWEEP_SORT = 16  # more dirty TPCs than this are sorted by a sweep, not by insertion


class EngineState(NamedTuple):
    """The whole device state: numpy tables the compiled functions update in place."""

    sc: np.ndarray  # int64 scalars (S_*)
    fs: np.ndarray  # float64 scalars (F_*)
    atoms: np.ndarray  # int64 [N_ATOM_ROWS, atom capacity]
    fifos: np.ndarray  # int64 [N_FIFO_ROWS, FIFO capacity]
    fifo_mask: np.ndarray  # uint64 [FIFO capacity, mask words]
    fifo_tpcs: np.ndarray  # int64 [FIFO capacity, n_tpcs]: the TPCs of its mask, ascending
    # The FIFO index by TPC: row t lists (first T_NFIFOS entries) the
    # non-empty FIFOs whose mask includes TPC t, in the order of `_goes_after`.
    tpc_fifos: np.ndarray  # int64 [n_tpcs, FIFO capacity]
    ctx_last: np.ndarray  # int64 per context: dispatch seq when last served, -1 never
    tpcs: np.ndarray  # int64 [N_TPC_ROWS, n_tpcs]
    pending: np.ndarray  # uint64 mask words: TPCs of atoms launched since the last run
    slots: np.ndarray  # int64 [3, n_tpcs * 16]: one per (atom, TPC) started in a pass
    heap: np.ndarray  # int64 [2, n_tpcs * 16]: groups of running blocks, min-heap on H_END
    pass_atoms: np.ndarray  # int64: atoms that started blocks in the current pass
    clocks: np.ndarray  # int64 [2, capacity]: requested clocks, in effect order
    clock_dyn_w: np.ndarray  # float64: per-TPC dynamic power at each requested clock
    done: np.ndarray  # int64: atoms completed during the current run
    log: np.ndarray  # int64 [5, capacity]: the block log


# -- the compiled core -------------------------------------------------------


@njit(cache=True)
def _run(st, until, stop_on_completion):
    """The event loop: runs to `until` and returns one of the RUN_* codes.

    The helpers are closures over the state tables, which the compiler
    inlines; passing the tables as arguments would cost a reference-count
    update per table per call in the innermost loop.
    """
    sc, fs, atoms, fifos, tpc_fifos = st.sc, st.fs, st.atoms, st.fifos, st.tpc_fifos
    ctx_last, tpcs, slots, heap, log = st.ctx_last, st.tpcs, st.slots, st.heap, st.log
    clocks, pass_atoms = st.clocks, st.pass_atoms

    # The heap is 4-ary: half the depth of a binary heap, and the four
    # children of a node share a cache line.
    def heap_push(end, slot):
        """Add a group of blocks that all end at `end`."""
        i = sc[S_NGROUPS]
        sc[S_NGROUPS] = i + 1
        while i > 0:
            parent = (i - 1) >> 2
            if heap[H_END, parent] <= end:
                break
            heap[H_END, i] = heap[H_END, parent]
            heap[H_SLOT, i] = heap[H_SLOT, parent]
            i = parent
        heap[H_END, i] = end
        heap[H_SLOT, i] = slot

    def heap_pop():
        """Remove the group that ends first; return its first slot."""
        top = heap[H_SLOT, 0]
        n = sc[S_NGROUPS] - 1
        sc[S_NGROUPS] = n
        end = heap[H_END, n]
        slot = heap[H_SLOT, n]
        i = 0
        while True:
            first = 4 * i + 1
            if first >= n:
                break
            child = first
            child_end = heap[H_END, first]
            for c in range(first + 1, min(first + 4, n)):
                if heap[H_END, c] < child_end:
                    child, child_end = c, heap[H_END, c]
            if child_end >= end:
                break
            heap[H_END, i] = child_end
            heap[H_SLOT, i] = heap[H_SLOT, child]
            i = child
        heap[H_END, i] = end
        heap[H_SLOT, i] = slot
        return top

    def mark_dirty(tpc):
        if tpcs[T_DIRTY, tpc] == 0:
            tpcs[T_DIRTY, tpc] = 1
            tpcs[T_DIRTY_LIST, sc[S_NDIRTY]] = tpc
            sc[S_NDIRTY] += 1

    def integrate_to(t):
        """Power is constant since the last instant: add its energy exactly."""
        in_use = min(sc[S_DEMAND], sc[S_BW])
        power = fs[F_IDLE_W] + sc[S_BUSY] * fs[F_DYN_W] + fs[F_MEM_W_PER_MBPS] * in_use
        fs[F_ENERGY] += power * (t - sc[S_NOW]) * 1e-9
        sc[S_NOW] = t

    def precedes(q, r):
        """Whether the head of FIFO `q` comes before the head of FIFO `r` in
        dispatch order: higher priority; then the least recently served
        context, the lower context id and the earlier launch; or, in launch
        order, the earlier order.  The key is total: atoms are distinct."""
        if fifos[Q_PRIO, q] != fifos[Q_PRIO, r]:
            return fifos[Q_PRIO, q] > fifos[Q_PRIO, r]
        aq, ar = fifos[Q_HEAD, q], fifos[Q_HEAD, r]
        if sc[S_BY_LAUNCH] != 0:
            # A context's orders never decrease, so a FIFO's head has its least.
            if atoms[A_ORDER, aq] != atoms[A_ORDER, ar]:
                return atoms[A_ORDER, aq] < atoms[A_ORDER, ar]
            return aq < ar
        cq, cr = fifos[Q_CTX, q], fifos[Q_CTX, r]
        if ctx_last[cq] != ctx_last[cr]:
            return ctx_last[cq] < ctx_last[cr]
        if cq != cr:
            return cq < cr
        return aq < ar

    def choose_fifo(tpc, free):
        """The FIFO whose head `tpc` takes next, or -1.  Only the TPC's index
        row is looked at, in its order: in launch order the first FIFO that
        fits is the one; in round robin, the first priority level that fits."""
        best = -1
        best_prio = 0
        best_last = 0
        best_ctx = 0
        best_atom = 0
        smallest = UNITS_PER_TPC + 1  # smallest block of the FIFOs that may use `tpc`
        by_launch = sc[S_BY_LAUNCH] != 0
        for i in range(tpcs[T_NFIFOS, tpc]):
            q = tpc_fifos[tpc, i]
            prio = fifos[Q_PRIO, q]
            if best >= 0 and prio < best_prio:
                return best
            units = fifos[Q_UNITS, q]
            smallest = min(smallest, units)
            if units > free:
                continue
            if by_launch:
                return q
            # Equal priority: the least recently served context, then the
            # lower context id, then the earlier launch (as `precedes`).
            ctx = fifos[Q_CTX, q]
            last = ctx_last[ctx]
            atom = fifos[Q_HEAD, q]
            if (
                best < 0
                or last < best_last
                or (
                    last == best_last and (ctx < best_ctx or (ctx == best_ctx and atom < best_atom))
                )
            ):
                best, best_prio, best_last, best_ctx, best_atom = q, prio, last, ctx, atom
        if best < 0:  # the whole row was looked at: the bound is now exact
            tpcs[T_MIN_UNITS, tpc] = smallest
        return best

    def take_blocks(q, count):
        """The head of FIFO `q` hands out its next `count` blocks, which join
        its group for this pass (see `occupy`); returns the first."""
        a = fifos[Q_HEAD, q]
        block = atoms[A_NEXT, a]
        atoms[A_NEXT, a] = block + count
        if block + count == atoms[A_END, a]:  # no blocks left: off its FIFO
            nxt = atoms[A_LINK, a]
            if nxt < 0:  # the FIFO is empty: out of the index
                _unlist_fifo(st, q)
                fifos[Q_HEAD, q] = -1
                fifos[Q_TAIL, q] = -1
            elif sc[S_BY_LAUNCH] != 0:  # its place in the rows follows its head
                fifos[Q_HEAD, q] = nxt
                _relist_fifo(st, q)
            else:
                fifos[Q_HEAD, q] = nxt
        seq = sc[S_SEQ] + count
        sc[S_SEQ] = seq
        ctx_last[atoms[A_CTX, a]] = seq - 1
        sc[S_DEMAND] += count * atoms[A_DEMAND, a]
        sc[S_RUNNING] += count
        atoms[A_RUNNING, a] += count
        if atoms[A_PASS, a] != sc[S_PASS]:
            atoms[A_PASS, a] = sc[S_PASS]
            atoms[A_GROUP, a] = -1
            atoms[A_PASS_BLOCKS, a] = 0
            pass_atoms[sc[S_NPASS]] = a
            sc[S_NPASS] += 1
        atoms[A_PASS_BLOCKS, a] += count
        return block

    def occupy(a, tpc, count):
        """`count` blocks of atom `a`, taken in this pass, start on `tpc`.
        They join the atom's group for the pass: blocks of one atom started
        at one instant end together."""
        if tpcs[T_BLOCKS, tpc] == 0:
            sc[S_BUSY] += 1
        tpcs[T_BLOCKS, tpc] += count
        tpcs[T_FREE, tpc] -= count * atoms[A_UNITS, a]
        slot = sc[S_FREE_SLOT]
        sc[S_FREE_SLOT] = slots[SL_NEXT, slot]
        slots[SL_ITEM, slot] = (a << _TPC_BITS) | tpc
        slots[SL_COUNT, slot] = count
        slots[SL_NEXT, slot] = atoms[A_GROUP, a]
        atoms[A_GROUP, a] = slot

    def log_block(a, block, tpc):
        n = sc[S_LOG_N]
        log[L_ATOM, n] = a
        log[L_BLOCK, n] = block
        log[L_TPC, n] = tpc
        log[L_START, n] = sc[S_NOW]
        sc[S_LOG_N] = n + 1

    def start_block(q, tpc):
        """Start the next block of the head of FIFO `q` on `tpc`."""
        a = fifos[Q_HEAD, q]
        block = take_blocks(q, 1)
        occupy(a, tpc, 1)
        if sc[S_LOG_ON] != 0:
            log_block(a, block, tpc)

    def start_wave(q, n):
        """The head of FIFO `q`, the first in dispatch order for the dirty
        TPCs whose candidate it is (``tpcs[T_CAND, :n]``), starts as many
        blocks as they have room for, spread as block-exact rounds would
        spread them if it were alone: R full rounds of one block per TPC
        with room, then one more on the first (ascending) with room left.
        Every TPC with room for it is among them: one that is not dirty had
        room for no queued FIFO including it, and still has none."""
        a = fifos[Q_HEAD, q]
        units = atoms[A_UNITS, a]
        k = 0
        room = 0
        for i in range(n):
            if tpcs[T_CAND, i] == q:
                tpc = tpcs[T_DIRTY_LIST, i]
                tpcs[T_WAVE_TPC, k] = tpc
                tpcs[T_WAVE_BLOCKS, k] = tpcs[T_FREE, tpc] // units
                room += tpcs[T_WAVE_BLOCKS, k]
                k += 1
        left = atoms[A_END, a] - atoms[A_NEXT, a]
        rounds, extra = MAX_BLOCKS_PER_TPC, 0
        if room > left:
            rounds, extra = _full_rounds(tpcs[T_WAVE_BLOCKS], k, left)
        count = 0
        most = 0
        for j in range(k):
            got = min(tpcs[T_WAVE_BLOCKS, j], rounds)
            if extra > 0 and tpcs[T_WAVE_BLOCKS, j] > rounds:
                got += 1
                extra -= 1
            tpcs[T_WAVE_BLOCKS, j] = got
            count += got
            most = max(most, got)
        block = take_blocks(q, count)  # first: it opens the atom's group for the pass
        for j in range(k):
            if tpcs[T_WAVE_BLOCKS, j] > 0:
                occupy(a, tpcs[T_WAVE_TPC, j], tpcs[T_WAVE_BLOCKS, j])
        if sc[S_LOG_ON] != 0:  # one record per block, in the rounds' order
            for r in range(most):
                for j in range(k):
                    if tpcs[T_WAVE_BLOCKS, j] > r:
                        log_block(a, block, tpcs[T_WAVE_TPC, j])
                        block += 1

    def sort_dirty(n):
        """Sort the dirty TPCs ascending: usually one or two, by insertion;
        many (a wave ended, listed in reverse), by a sweep of the flags."""
        if n > _SWEEP_SORT:
            k = 0
            for t in range(sc[S_NTPC]):
                if tpcs[T_DIRTY, t] != 0:
                    tpcs[T_DIRTY_LIST, k] = t
                    k += 1
            return
        for i in range(1, n):
            t = tpcs[T_DIRTY_LIST, i]
            j = i - 1
            while j >= 0 and tpcs[T_DIRTY_LIST, j] > t:
                tpcs[T_DIRTY_LIST, j + 1] = tpcs[T_DIRTY_LIST, j]
                j -= 1
            tpcs[T_DIRTY_LIST, j + 1] = t

    def candidate(tpc):
        """The FIFO `tpc` would take from now, or -1."""
        free = tpcs[T_FREE, tpc]
        if free < tpcs[T_MIN_UNITS, tpc]:
            return -1
        return choose_fifo(tpc, free)

    def dispatch_rounds():
        """Rounds over the dirty TPCs, ascending, until one places nothing.

        Block mode (see reference.py): each TPC takes at most one block per
        round.  Wave mode: each round finds the first FIFO in dispatch order
        whose head fits on a dirty TPC, which starts a wave; that FIFO is
        also the first for every TPC it fills, so priorities hold per TPC as
        in block mode, and round robin turns per wave, not per block.  A
        dirty TPC keeps its candidate FIFO between rounds: a wave changes
        only the TPCs it fills (their candidate was its FIFO), that FIFO's
        head and, in round robin, its context's rank, which only drops; so
        only those candidates are looked up again."""
        wave_mode = sc[S_WAVE] != 0
        n = sc[S_NDIRTY]
        sort_dirty(n)
        for i in range(n):
            tpcs[T_CAND, i] = _STALE
        while n > 0:
            kept = 0
            best = -1
            for i in range(n):  # compaction keeps the dirty TPCs ascending
                tpc = tpcs[T_DIRTY_LIST, i]
                q = tpcs[T_CAND, i]
                if q == _STALE:
                    q = candidate(tpc)
                if q < 0:  # nothing fits it until a block ends or a launch
                    tpcs[T_DIRTY, tpc] = 0
                    continue
                tpcs[T_DIRTY_LIST, kept] = tpc
                kept += 1
                if not wave_mode:
                    start_block(q, tpc)
                    continue
                tpcs[T_CAND, kept - 1] = q
                if best < 0 or precedes(q, best):
                    best = q
            n = kept
            if best >= 0:
                start_wave(best, n)
                ctx = fifos[Q_CTX, best]
                for i in range(n):
                    q = tpcs[T_CAND, i]
                    if q == best or (sc[S_BY_LAUNCH] == 0 and fifos[Q_CTX, q] == ctx):
                        tpcs[T_CAND, i] = _STALE

    def dispatch():
        """One dispatch pass, then fix the new blocks' ends."""
        sc[S_PASS] += 1
        sc[S_NPASS] = 0
        log_begin = sc[S_LOG_N]
        dispatch_rounds()
        sc[S_NDIRTY] = 0

        # Timing, fixed now that the pass is over and the contention known:
        # the compute part scales with f_max / f, the memory part with demand.
        clock, fmax, bw, demand, now = sc[S_CLOCK], sc[S_FMAX], sc[S_BW], sc[S_DEMAND], sc[S_NOW]
        for k in range(sc[S_NPASS]):
            a = pass_atoms[k]
            if clock == fmax:
                duration = atoms[A_COMPUTE, a]
            else:
                duration = (atoms[A_COMPUTE, a] * fmax + clock - 1) // clock
            if demand <= bw:
                duration += atoms[A_MEM, a]
            else:
                duration += (atoms[A_MEM, a] * demand + bw - 1) // bw
            atoms[A_GROUP_END, a] = now + duration
            atoms[A_BUSY_NS, a] += atoms[A_PASS_BLOCKS, a] * duration
            heap_push(now + duration, atoms[A_GROUP, a])
        for i in range(log_begin, sc[S_LOG_N]):
            log[L_END, i] = atoms[A_GROUP_END, log[L_ATOM, i]]

    def end_group(t, slot):
        """The blocks of a group end at `t`: free their TPCs and slots."""
        while slot >= 0:
            item = slots[SL_ITEM, slot]
            count = slots[SL_COUNT, slot]
            nxt = slots[SL_NEXT, slot]
            slots[SL_NEXT, slot] = sc[S_FREE_SLOT]
            sc[S_FREE_SLOT] = slot
            slot = nxt
            a = item >> _TPC_BITS
            tpc = item & ((1 << _TPC_BITS) - 1)
            tpcs[T_FREE, tpc] += count * atoms[A_UNITS, a]
            tpcs[T_BLOCKS, tpc] -= count
            if tpcs[T_BLOCKS, tpc] == 0:
                sc[S_BUSY] -= 1
            sc[S_DEMAND] -= count * atoms[A_DEMAND, a]
            sc[S_RUNNING] -= count
            sc[S_COMPLETED] += count
            mark_dirty(tpc)
            atoms[A_RUNNING, a] -= count
            if atoms[A_RUNNING, a] == 0 and atoms[A_NEXT, a] == atoms[A_END, a]:
                atoms[A_DONE_NS, a] = t
                st.done[sc[S_NDONE]] = a
                sc[S_NDONE] += 1

    sc[S_NDONE] = 0
    for w in range(st.pending.shape[0]):  # the TPCs of atoms launched since the last run
        bits = st.pending[w]
        for b in range(64):
            if (bits >> np.uint64(b)) & np.uint64(1):
                mark_dirty(w * 64 + b)
        st.pending[w] = 0
    log_room_needed = sc[S_NTPC] * MAX_BLOCKS_PER_TPC

    # This loop is the event loop.
    while True:
        if sc[S_NDIRTY] > 0:
            if sc[S_LOG_ON] != 0 and log.shape[1] - sc[S_LOG_N] < log_room_needed:
                return RUN_LOG_FULL
            dispatch()

        # The next instant: a group of blocks ends, or a clock request takes effect.
        t = FOREVER_NS
        if sc[S_NGROUPS] > 0:
            t = heap[H_END, 0]
        head = sc[S_CLK_HEAD]
        if head < sc[S_CLK_TAIL] and clocks[K_TIME, head] < t:
            t = clocks[K_TIME, head]
        if t == FOREVER_NS or t > until:  # nothing more happens by `until`
            if until != FOREVER_NS:
                integrate_to(until)
            return RUN_REACHED
        integrate_to(t)

        while head < sc[S_CLK_TAIL] and clocks[K_TIME, head] == t:
            sc[S_CLOCK] = clocks[K_MHZ, head]
            fs[F_DYN_W] = st.clock_dyn_w[head]
            head += 1
        sc[S_CLK_HEAD] = head

        while sc[S_NGROUPS] > 0 and heap[H_END, 0] == t:
            end_group(t, heap_pop())
        if stop_on_completion and sc[S_NDONE] > 0:
            return RUN_COMPLETIONS


@njit(cache=True)
def _full_rounds(room, k, blocks):
    """Spread `blocks` over TPCs with ``room[:k]`` free slots (more in all)
    as rounds of one block per TPC with room would: the most full rounds R
    that fit, and how many TPCs (the first with room above R) take one more."""
    rounds = 0
    placed = 0
    while True:
        above = 0  # TPCs with room for a block in round `rounds`
        for j in range(k):
            if room[j] > rounds:
                above += 1
        if placed + above > blocks:
            return rounds, blocks - placed
        placed += above
        rounds += 1


@njit(cache=True)
def _goes_after(fifos, atoms, by_launch, r, q):
    """Whether FIFO `r` goes after FIFO `q` in an index row: lower priority;
    in launch order, also a later head (its order, then its id), so that the
    first FIFO of a row that fits is the one to dispatch from."""
    if fifos[Q_PRIO, r] != fifos[Q_PRIO, q] or not by_launch:
        return fifos[Q_PRIO, r] < fifos[Q_PRIO, q]
    ar, aq = fifos[Q_HEAD, r], fifos[Q_HEAD, q]
    if atoms[A_ORDER, ar] != atoms[A_ORDER, aq]:
        return atoms[A_ORDER, ar] > atoms[A_ORDER, aq]
    return ar > aq


@njit(cache=True)
def _sift_forward(fifos, atoms, by_launch, row, i, q):
    """Put FIFO `q` at place `i` of the index row `row` (free to overwrite),
    or further forward, before the FIFOs that go after it."""
    while i > 0 and _goes_after(fifos, atoms, by_launch, row[i - 1], q):
        row[i] = row[i - 1]
        i -= 1
    row[i] = q


@njit(cache=True)
def _list_fifo(st, q):
    """Put the non-empty FIFO `q` in the index rows of its TPCs, after its
    equals (a new launch usually goes last: a short move)."""
    fifos, atoms, tpcs, tpc_fifos = st.fifos, st.atoms, st.tpcs, st.tpc_fifos
    by_launch = st.sc[S_BY_LAUNCH] != 0
    st.sc[S_NQ] += 1
    for k in range(fifos[Q_NTPCS, q]):
        t = st.fifo_tpcs[q, k]
        n = tpcs[T_NFIFOS, t]
        tpcs[T_NFIFOS, t] = n + 1
        _sift_forward(fifos, atoms, by_launch, tpc_fifos[t], n, q)


@njit(cache=True)
def _relist_fifo(st, q):
    """FIFO `q` has a new head (launch order): move it to its new place in
    its rows, usually further back (a context's orders do not decrease)."""
    fifos, atoms, tpcs, tpc_fifos = st.fifos, st.atoms, st.tpcs, st.tpc_fifos
    for k in range(fifos[Q_NTPCS, q]):
        t = st.fifo_tpcs[q, k]
        row = tpc_fifos[t]
        n = tpcs[T_NFIFOS, t]
        i = 0
        while row[i] != q:
            i += 1
        while i + 1 < n and not _goes_after(fifos, atoms, True, row[i + 1], q):
            row[i] = row[i + 1]
            i += 1
        _sift_forward(fifos, atoms, True, row, i, q)


@njit(cache=True)
def _unlist_fifo(st, q):
    """Take FIFO `q` out of the index rows of its TPCs, keeping their order."""
    tpcs, tpc_fifos = st.tpcs, st.tpc_fifos
    st.sc[S_NQ] -= 1
    for k in range(st.fifos[Q_NTPCS, q]):
        t = st.fifo_tpcs[q, k]
        n = tpcs[T_NFIFOS, t] - 1
        i = 0
        while tpc_fifos[t, i] != q:
            i += 1
        for j in range(i, n):
            tpc_fifos[t, j] = tpc_fifos[t, j + 1]
        tpcs[T_NFIFOS, t] = n


@njit(cache=True)
def _add_fifo(st, q, ctx, priority, units, mask_words):
    """Set up FIFO `q` (within the FIFO tables' capacity) for atoms of this
    context, priority, block size and mask (`mask_words`: 64 TPCs a word)."""
    fifos = st.fifos
    fifos[Q_PRIO, q] = priority
    fifos[Q_CTX, q] = ctx
    fifos[Q_UNITS, q] = units
    fifos[Q_HEAD, q] = -1
    fifos[Q_TAIL, q] = -1
    k = 0
    for w in range(mask_words.shape[0]):
        bits = np.uint64(mask_words[w])
        st.fifo_mask[q, w] = bits
        while bits:
            low = bits & (~bits + np.uint64(1))
            bits ^= low
            st.fifo_tpcs[q, k] = w * 64 + _bit_index(low)
            k += 1
    fifos[Q_NTPCS, q] = k


@njit(cache=True)
def _push_atom(st, atom, q, units, compute_ns, mem_ns, demand_mbps, begin, end, ctx, order):
    """Append atom `atom` (within the atom tables' capacity) to FIFO `q`; a
    FIFO that was empty joins the index rows of its TPCs.  As `launch`
    checks, a context's `order`s must not decrease."""
    atoms, fifos, fifo_mask, tpcs = st.atoms, st.fifos, st.fifo_mask, st.tpcs
    for r in range(N_ATOM_ROWS):
        atoms[r, atom] = -1
    atoms[A_UNITS, atom] = units
    atoms[A_COMPUTE, atom] = compute_ns
    atoms[A_MEM, atom] = mem_ns
    atoms[A_DEMAND, atom] = demand_mbps
    atoms[A_NEXT, atom] = begin
    atoms[A_END, atom] = end
    atoms[A_RUNNING, atom] = 0
    atoms[A_CTX, atom] = ctx
    atoms[A_PASS, atom] = 0
    atoms[A_BUSY_NS, atom] = 0
    atoms[A_ORDER, atom] = order
    for w in range(st.pending.shape[0]):
        st.pending[w] |= fifo_mask[q, w]
    for k in range(fifos[Q_NTPCS, q]):  # lower the TPCs' smallest-block bound
        t = st.fifo_tpcs[q, k]
        if tpcs[T_MIN_UNITS, t] > units:
            tpcs[T_MIN_UNITS, t] = units
    tail = fifos[Q_TAIL, q]
    was_empty = tail < 0
    if was_empty:
        fifos[Q_HEAD, q] = atom
        _list_fifo(st, q)
    else:
        atoms[A_LINK, tail] = atom
    fifos[Q_TAIL, q] = atom


@njit(cache=True)
def _bit_index(low):
    """The index of the one bit set in the uint64 `low`."""
    i = 0
    if low >> np.uint64(32):
        i += 32
        low >>= np.uint64(32)
    if low >> np.uint64(16):
        i += 16
        low >>= np.uint64(16)
    if low >> np.uint64(8):
        i += 8
        low >>= np.uint64(8)
    if low >> np.uint64(4):
        i += 4
        low >>= np.uint64(4)
    if low >> np.uint64(2):
        i += 2
        low >>= np.uint64(2)
    if low >> np.uint64(1):
        i += 1
    return i


# -- the Python face ---------------------------------------------------------


def _widened(table: np.ndarray, size: int, fill, axis: int) -> np.ndarray:
    """`table` grown to `size` along `axis`, new entries set to `fill`."""
    shape = list(table.shape)
    shape[axis] = size
    # Zeros come from the allocator untouched, so only the copied part costs.
    out = np.zeros(shape, table.dtype) if fill == 0 else np.full(shape, fill, table.dtype)
    index = [slice(None)] * table.ndim
    index[axis] = slice(0, table.shape[axis])
    out[tuple(index)] = table
    return out


def _mask_words(mask: int, words: int) -> list[int]:
    return [(mask >> (64 * w)) & 0xFFFF_FFFF_FFFF_FFFF for w in range(words)]


class Engine(VirtualGpu):
    """The virtual GPU with its numba timing back end.  See `api.VirtualGpu` for the API."""

    def __init__(
        self,
        spec: GpuSpec | str = "a100",
        *,
        record_blocks: bool = False,
        dispatch_order: str = "context",
        atom_capacity: int = 256,
        mode: str = "block",
        keep_history: bool = True,
    ) -> None:
        if mode not in MODES:
            raise InvalidArgument(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        super().__init__(
            spec, record_blocks=record_blocks, dispatch_order=dispatch_order,
            keep_history=keep_history,
        )  # fmt: skip
        self.mode = mode
        spec = self.spec
        n = spec.n_tpcs
        self._words = (n + 63) // 64
        i64 = np.int64
        sc = np.zeros(N_SCALARS, i64)
        sc[S_CLOCK] = sc[S_FMAX] = spec.max_clock_mhz
        sc[S_BW] = spec.bandwidth_mbps
        sc[S_LOG_ON] = int(self.record_blocks)
        sc[S_NTPC] = n
        sc[S_BY_LAUNCH] = int(self.dispatch_order == "launch")
        sc[S_WAVE] = MODES.index(mode)
        fs = np.zeros(N_FLOATS, np.float64)
        fs[F_IDLE_W] = spec.idle_power_w
        fs[F_DYN_W] = spec.dynamic_power_per_tpc_w(spec.max_clock_mhz)
        fs[F_MEM_W_PER_MBPS] = spec.mem_w_per_mbps()
        tpcs = np.zeros((N_TPC_ROWS, n), i64)
        tpcs[T_FREE] = UNITS_PER_TPC
        tpcs[T_MIN_UNITS] = UNITS_PER_TPC + 1
        cap = max(1, atom_capacity)
        n_slots = n * MAX_BLOCKS_PER_TPC  # the most blocks that can run at once
        slots = np.zeros((3, n_slots), i64)
        slots[SL_NEXT] = np.arange(1, n_slots + 1)
        slots[SL_NEXT, -1] = -1
        log_cap = 4 * n * MAX_BLOCKS_PER_TPC if self.record_blocks else 0
        self._st = EngineState(
            sc=sc,
            fs=fs,
            atoms=np.zeros((N_ATOM_ROWS, cap), i64),
            fifos=np.zeros((N_FIFO_ROWS, 8), i64),
            fifo_mask=np.zeros((8, self._words), np.uint64),
            fifo_tpcs=np.zeros((8, n), i64),
            tpc_fifos=np.zeros((n, 8), i64),
            ctx_last=np.full(8, -1, i64),
            tpcs=tpcs,
            pending=np.zeros(self._words, np.uint64),
            slots=slots,
            heap=np.zeros((2, n_slots), i64),
            pass_atoms=np.zeros(n_slots, i64),
            clocks=np.zeros((2, 8), i64),
            clock_dyn_w=np.zeros(8, np.float64),
            done=np.zeros(cap, i64),
            log=np.zeros((5, log_cap), i64),
        )
        self._fifo_of: dict[tuple[int, int, int, int], int] = {}
        # Without history: FIFO ids handed out so far, and those free again.
        self._fifo_count = 0
        self._free_fifos: list[int] = []

    def _grow(self, field: str, size: int, fill=0, axis: int = -1) -> None:
        table = getattr(self._st, field)
        self._st = self._st._replace(**{field: _widened(table, size, fill, axis)})

    # -- the back end --------------------------------------------------------

    def _backend_add_context(self, ctx: int) -> None:
        if ctx >= self._st.ctx_last.shape[0]:
            self._grow("ctx_last", 2 * (ctx + 1), fill=-1)

    def ensure_capacity(self, atoms: int, fifos: int) -> None:
        """Make the tables hold atom ids below `atoms` and FIFO ids below
        `fifos`.  Compiled callers of `_push_atom` and `_add_fifo` stop and
        ask for this before going past the capacity they were given."""
        st = self._st
        if atoms > st.atoms.shape[1]:
            size = max(atoms, 2 * st.atoms.shape[1])
            self._grow("atoms", size)
            self._grow("done", size)
        if fifos > st.fifos.shape[1]:
            size = max(fifos, 2 * st.fifos.shape[1])
            self._grow("fifos", size)
            self._grow("fifo_mask", size, axis=0)
            self._grow("fifo_tpcs", size, axis=0)
            self._grow("tpc_fifos", size)

    def _fifo(self, ctx: int, priority: int, units: int, mask: int) -> int:
        """The FIFO for atoms of this context, priority, block size and mask."""
        key = (ctx, priority, units, mask)
        q = self._fifo_of.get(key)
        if q is None:
            q = len(self._fifo_of) if self.keep_history else self._new_fifo_id()
            self._fifo_of[key] = q
            self.ensure_capacity(0, q + 1)
            words = np.array(_mask_words(mask, self._words), dtype=np.uint64)
            _add_fifo(self._st, q, ctx, priority, units, words)
        return q

    def _new_fifo_id(self) -> int:
        """Without history: a free FIFO id, lowest first.  When every id the
        table holds is taken, the FIFOs with no queued atom are forgotten
        first (a FIFO's id decides nothing: the index rows order FIFOs by
        priority and head), so the table grows only with the FIFOs in use."""
        if not self._free_fifos and self._fifo_count == self._st.fifos.shape[1]:
            heads = self._st.fifos[Q_HEAD]
            for key, q in list(self._fifo_of.items()):
                if heads[q] < 0:
                    del self._fifo_of[key]
                    self._free_fifos.append(q)
            heapq.heapify(self._free_fifos)
        if self._free_fifos:
            return heapq.heappop(self._free_fifos)
        self._fifo_count += 1
        return self._fifo_count - 1

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
        self.ensure_capacity(atom_id + 1, 0)
        q = self._fifo(ctx, priority, cost.units, mask)
        _push_atom(
            self._st, atom_id, q, cost.units, cost.compute_ns, cost.mem_ns, cost.demand_mbps,
            begin, end, ctx, order,
        )  # fmt: skip

    def _backend_set_clock(self, clock_mhz: int, effective_ns: int) -> None:
        sc = self._st.sc
        head, tail = int(sc[S_CLK_HEAD]), int(sc[S_CLK_TAIL])
        if head == tail:
            head = tail = 0
        elif tail == self._st.clocks.shape[1]:
            self._grow("clocks", 2 * tail)
            self._grow("clock_dyn_w", 2 * tail)
        st = self._st
        st.clocks[K_TIME, tail] = effective_ns
        st.clocks[K_MHZ, tail] = clock_mhz
        st.clock_dyn_w[tail] = self.spec.dynamic_power_per_tpc_w(clock_mhz)
        sc[S_CLK_HEAD], sc[S_CLK_TAIL] = head, tail + 1

    def _backend_run(self, until_ns: int, stop_on_completion: bool) -> list[tuple[int, int]]:
        done: list[tuple[int, int]] = []
        while True:
            status = _run(self._st, until_ns, stop_on_completion)
            st = self._st
            n = int(st.sc[S_NDONE])
            if n == 1:
                atom = int(st.done[0])
                done.append((int(st.atoms[A_DONE_NS, atom]), atom))
            elif n:
                atoms = st.done[:n]
                done.extend(zip(st.atoms[A_DONE_NS, atoms].tolist(), atoms.tolist(), strict=True))
            if status != RUN_LOG_FULL:
                if len(done) > 1:
                    done.sort()
                return done
            self._grow("log", 2 * st.log.shape[1] + 1)

    def _backend_tpc_units(self) -> list[int]:
        return (UNITS_PER_TPC - self._st.tpcs[T_FREE]).tolist()

    def _backend_atom_busy_ns(self, atom_id: int) -> int:
        return int(self._st.atoms[A_BUSY_NS, atom_id])

    def _backend_queued(self, atom_id: int) -> bool:
        atoms = self._st.atoms
        return bool(atoms[A_NEXT, atom_id] < atoms[A_END, atom_id])

    def _backend_demand_mbps(self) -> int:
        return int(self._st.sc[S_DEMAND])

    def _backend_counts(self) -> tuple[int, int]:
        return int(self._st.sc[S_SEQ]), int(self._st.sc[S_COMPLETED])

    def _backend_pending_clocks(self) -> list[tuple[int, int]]:
        st = self._st
        live = slice(st.sc[S_CLK_HEAD], st.sc[S_CLK_TAIL])
        return list(
            zip(st.clocks[K_TIME, live].tolist(), st.clocks[K_MHZ, live].tolist(), strict=True)
        )

    def _backend_block_log(self) -> list[BlockRecord]:
        rows = self._st.log[:, : self._st.sc[S_LOG_N]].T.tolist()
        return [BlockRecord(*row) for row in rows]

    @property
    def now_ns(self) -> int:
        return int(self._st.sc[S_NOW])

    def next_event_ns(self) -> int | None:
        """The earliest instant the device can change without new launches:
        a group of running blocks ending, or a clock change taking effect.
        No atom completes before it (None: nothing is running or pending)."""
        st = self._st
        sc = st.sc
        times = []
        if sc[S_NGROUPS] > 0:
            times.append(int(st.heap[H_END, 0]))
        if sc[S_CLK_HEAD] < sc[S_CLK_TAIL]:
            times.append(int(st.clocks[K_TIME, sc[S_CLK_HEAD]]))
        return min(times) if times else None

    @property
    def clock_mhz(self) -> int:
        return int(self._st.sc[S_CLOCK])

    @property
    def energy_j(self) -> float:
        return float(self._st.fs[F_ENERGY])

    @property
    def busy_tpcs(self) -> int:
        return int(self._st.sc[S_BUSY])

    @property
    def running_blocks(self) -> int:
        return int(self._st.sc[S_RUNNING])

"""Programs' streams in the one loop: the booted driver's device (`drivers/vgpu/sharing`).

The experiments' `Simulation` lays tenants' requests out as the loop's
tables once (`LoopRun`); the booted vGPU driver (`drivers/vgpu/scheduler.py`)
runs for as long as the machine does, and its streams and kernels come and
go.  `ProgramRun` is the same loop on tables that change while it runs:

* a stream is a column of the stream table, of kind `KIND_PROGRAM`, added
  when a program first launches on it and dropped when its context goes;
* a kernel is a column of the kernel table, taken when a program launches
  it and given back once the driver has heard it finish; a stream's
  kernels queued behind its current one are a list through `K_NEXT`;
* the loop logs each finished kernel (`Dev.fin`) for the driver, recycles
  the ids of completed atoms, and keeps no atom log, so the tables hold
  only the work in flight, however long the machine runs;
* what a policy learns per kernel (LithOS's predictor) it keeps per
  (stream, slot): a slot per kernel name on the stream, `KERNEL_SLOTS` of
  them; a stream with more names shares slots among them by name.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from drivers.vgpu.engine import A_DONE_NS, Q_HEAD
from drivers.vgpu.sharing import epoch
from drivers.vgpu.sharing.compiled import (
    AT_STREAM,
    D_DURATION_NS,
    D_NATOMS,
    D_NCLOCKS,
    D_NFIFO_FREE,
    D_NFIN,
    D_NOW,
    D_NSTREAMS,
    D_NTIMERS,
    D_OPEN_ATOM,
    D_PROGRAMS,
    D_RECYCLE,
    D_STOP_KERNEL,
    FH_Q,
    K_HOST_NS,
    K_MASK,
    K_NEXT,
    K_PRIO,
    K_SLOT,
    KIND_PROGRAM,
    N_K_ROWS,
    N_ST_ROWS,
    SCRATCH_STREAMS,
    ST_CTX,
    ST_HP,
    ST_KCOL,
    ST_KIND,
    ST_POS,
    ST_QHEAD,
    ST_QTAIL,
    TM_T,
    Dev,
)
from drivers.vgpu.sharing.epoch_run import (
    _START_ATOMS,
    _START_FIFOS,
    LoopRun,
    _ints,
    device_scalars,
    kernel_column,
    new_tables,
    widened,
)
from drivers.vgpu.work import KernelDesc

#: Slots per stream in a policy's per-(stream, kernel) tables.
KERNEL_SLOTS = 64
#: Kernel shapes whose table column is kept (`ProgramRun._column`).
COLUMNS_KEPT = 256
#: Launch graphs whose table columns are kept (`ProgramRun._columns_of`).
GRAPHS_KEPT = 32
_FOREVER = 1 << 62


class ProgramRun(LoopRun):
    """The loop's tables for the driver's programs' streams; `sim` is the
    driver's `StreamScheduler`, the `Device` its policies are in charge of."""

    def _tables(self) -> Dev:
        sim = self.sim
        sc = device_scalars(sim)
        sc[D_PROGRAMS] = 1
        sc[D_RECYCLE] = int(not sim.gpu.keep_history)
        sc[D_DURATION_NS] = _FOREVER
        sc[D_NOW] = sim.gpu.now_ns
        #: Free kernel columns, lowest first.
        self.free_kernels: list[int] = list(range(255, -1, -1))
        self._columns: dict[tuple, np.ndarray] = {}
        self._graphs: dict[tuple[int, ...], tuple[tuple, np.ndarray]] = {}
        return new_tables(
            sim, sc, 8, kern=np.zeros((N_K_ROWS, 256), np.int64),
            ctx_order=np.zeros(16, np.int64),
            free=np.zeros(_START_ATOMS, np.int64),
            fin=np.zeros((2, 2 * epoch.SPARE_ATOMS), np.int64),
            fifo_free=np.zeros(_START_FIFOS, np.int64),
        )  # fmt: skip

    def _engine_tables(self) -> None:
        """The engine's current tables: it replaces them when it grows (a new context)."""
        eng = self.sim.gpu._st
        if self.dev.eng is not eng:
            self.dev = self.dev._replace(eng=eng)

    def advance(self, end_ns: int) -> None:
        self._engine_tables()
        super().advance(end_ns)

    def switch(self, policy: Any) -> None:
        self._engine_tables()
        super().switch(policy)

    def set_clock(self, clock_mhz: int) -> int:
        self._engine_tables()
        return super().set_clock(clock_mhz)

    def _replace(self, **tables: np.ndarray) -> None:
        self.dev = self.dev._replace(
            **{name: _ints(table, self.interpreted) for name, table in tables.items()}
        )

    # -- streams ------------------------------------------------------------------

    def set_streams(self, streams: list[Any]) -> None:
        """The driver's streams are now `streams` (each with `ctx`, `hp`, and
        its old `index`, or -1 if new); each gets its new index.  A stream
        dropped must be idle: no kernel, none queued, no atom in flight."""
        d = self.dev
        n_old = int(d.sc[D_NSTREAMS])
        n = len(streams)
        old = [s.index for s in streams]
        st = np.zeros((N_ST_ROWS, max(8, d.st.shape[1], n)), np.int64)
        busy = np.zeros(st.shape[1], np.float64)
        new_of = np.full(max(1, n_old), -1, np.int64)
        for i, (s, j) in enumerate(zip(streams, old, strict=True)):
            if 0 <= j < n_old:
                st[:, i] = [int(x) for x in d.st[:, j]]
                busy[i] = d.busy[j]
                new_of[j] = i
            else:
                st[ST_KIND, i] = KIND_PROGRAM
                st[ST_POS, i] = -1
                st[ST_KCOL, i] = -1
                st[ST_QHEAD, i] = st[ST_QTAIL, i] = -1
            st[ST_CTX, i] = s.ctx
            st[ST_HP, i] = int(s.hp)
            s.index = i
            s.loop = self
        # The atoms in flight keep their streams, renumbered.
        first, end = int(d.sc[D_OPEN_ATOM]), int(d.sc[D_NATOMS])
        if end > first and n_old:
            done = d.eng.atoms[A_DONE_NS, first:end]
            live = np.nonzero(done < 0)[0] + first
            for a in live.tolist():
                d.atoms[AT_STREAM, a] = int(new_of[int(d.atoms[AT_STREAM, a])])
        d.sc[D_NSTREAMS] = n
        top = max([s.ctx for s in streams], default=0) + 1
        self._replace(
            st=st,
            busy=busy,
            ctx_order=widened(np.asarray(d.ctx_order), top),
            scratch=np.zeros(SCRATCH_STREAMS + st.shape[1], np.int64),
        )

    # -- kernels ---------------------------------------------------------------

    def submit(
        self, s: Any, descs: Sequence[KernelDesc], masks: list[int], priorities: list[int]
    ) -> list[int]:
        """Program stream `s` launched `descs`, in order (`masks`,
        `priorities`: what each launch asked for, for the driver's default
        policy); they run after the stream's earlier kernels.  Returns their
        columns.  However many there are, the loop hears of them in one call."""
        n = len(descs)
        while len(self.free_kernels) < n:
            width = self.dev.kern.shape[1]
            self._replace(kern=widened(self.dev.kern, 2 * width))
            self.free_kernels[:0] = range(2 * width - 1, width - 1, -1)  # used after the rest
        free = self.free_kernels
        ks = [free.pop() for _ in range(n)]
        at = np.array(ks)  # an index array, converted once
        kern = self.dev.kern
        kern[:, at] = self._columns_of(descs)
        kern[K_HOST_NS, at] = int(self.dev.sc[D_NOW])
        kern[K_SLOT, at] = [s.slot_of(desc.name) for desc in descs]
        kern[K_MASK, at] = masks
        kern[K_PRIO, at] = priorities
        kern[K_NEXT, at] = ks[1:] + [-1]  # a chain, in launch order
        self._engine_tables()
        if self.fns.needs_room(self.dev):
            self._grow()
        self.fns.program_submit(self.dev, self.pol, s.index, ks[0])
        return ks

    def _columns_of(self, descs: Sequence[KernelDesc]) -> np.ndarray:
        """The kernel table's rows that follow from `descs` alone, a column
        each.  A program launches the same graph again and again: the last
        GRAPHS_KEPT runs of descriptors have theirs kept, by the descriptors'
        identities (a graph's run on one stream is a new slice each time)."""
        key = tuple(map(id, descs))
        entry = self._graphs.get(key)
        if entry is not None:  # the entry holds the descriptors: their ids are theirs
            return entry[1]
        columns = np.stack([self._column(desc) for desc in descs], axis=1)
        if len(self._graphs) >= GRAPHS_KEPT:
            self._graphs.pop(next(iter(self._graphs)))
        self._graphs[key] = (tuple(descs), columns)
        return columns

    def _column(self, desc: KernelDesc) -> np.ndarray:
        """The kernel table's rows that follow from `desc` alone (a program
        launches the same few kernels again and again: they are kept, at
        most COLUMNS_KEPT of them)."""
        key = (desc.grid_blocks, desc.blocks_per_tpc, desc.block_duration_ns, desc.mem_fraction)
        column = self._columns.get(key)
        if column is None:
            if len(self._columns) >= COLUMNS_KEPT:
                self._columns.pop(next(iter(self._columns)))
            column = self._columns[key] = kernel_column(desc, self.sim.spec)
        return column

    def set_kernel_mask(self, k: int, mask: int) -> None:
        self.dev.kern[K_MASK, k] = mask

    def finished(self) -> list[tuple[int, int]]:
        """The kernels finished since the last call: (column, time), in order;
        their columns are free again.  The clock log is emptied too: the
        driver keeps none."""
        d = self.dev
        d.sc[D_NCLOCKS] = 0
        n = int(d.sc[D_NFIN])
        if not n:
            return []
        log = zip(d.fin[0, :n].tolist(), d.fin[1, :n].tolist(), strict=True)
        out = [(int(k), int(t)) for k, t in log]
        d.sc[D_NFIN] = 0
        self.free_kernels.extend(k for k, _ in reversed(out))
        return out

    def stop_at(self, k: int) -> None:
        """End the next epoch when kernel column `k` finishes."""
        self.dev.sc[D_STOP_KERNEL] = k

    def next_timer_ns(self) -> int | None:
        d = self.dev
        return int(d.timers[TM_T, 0]) if int(d.sc[D_NTIMERS]) else None

    def _grow(self) -> None:
        """Make room, recycling first: FIFOs no atom is queued in are
        forgotten and their ids reused (as an engine without history does)."""
        d = self.dev
        if int(d.sc[D_RECYCLE]) and self.fns.needs_room(d) & epoch.ROOM_FIFOS:
            self._recycle_fifos()
        if self.fns.needs_room(self.dev):
            super()._grow()
        d = self.dev
        if d.fifo_free.shape[0] < d.eng.fifos.shape[1]:
            self._replace(fifo_free=widened(np.asarray(d.fifo_free), d.eng.fifos.shape[1]))

    def _recycle_fifos(self) -> None:
        d = self.dev
        fh = np.asarray(d.fifo_hash, np.int64)
        heads = d.eng.fifos[Q_HEAD]
        used = np.nonzero(fh[FH_Q] >= 0)[0]
        empty = used[heads[fh[FH_Q, used]] < 0]
        if not len(empty):
            return
        freed = fh[FH_Q, empty].tolist()
        old = _ints(fh.copy(), self.interpreted)
        old[FH_Q, empty] = -1
        new = np.zeros_like(fh)
        new[FH_Q] = -1
        self.dev = d._replace(fifo_hash=_ints(new, self.interpreted))
        self.fns.rehash(self.dev, old)
        free = np.asarray(self.dev.fifo_free, np.int64)
        n = int(self.dev.sc[D_NFIFO_FREE])
        free = widened(free, n + len(freed))
        free[n : n + len(freed)] = sorted(freed, reverse=True)  # lowest id reused first
        self._replace(fifo_free=free)
        self.dev.sc[D_NFIFO_FREE] = n + len(freed)


def slot_of_name(slots: dict[str, int], name: str) -> int:
    """A kernel name's slot in a stream whose names so far have `slots`."""
    slot = slots.get(name)
    if slot is None:
        slot = len(slots) if len(slots) < KERNEL_SLOTS else zlib.crc32(name.encode()) % KERNEL_SLOTS
        if len(slots) < KERNEL_SLOTS:
            slots[name] = slot
    return slot


__all__ = ["KERNEL_SLOTS", "ProgramRun", "slot_of_name"]

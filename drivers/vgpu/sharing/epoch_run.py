"""A `Simulation` run in compiled epochs (`drivers/vgpu/sharing`).

`CompiledRun` lays a simulation's tenants, kernels and arrivals out as the
tables of the compiled epoch loop (epoch.py), runs it between Python
timers, grows its tables when they fill, and reads the results back.  At a
policy switch to a policy with no compiled form, `hand_back` writes the
state back into the simulation's Python objects, and the run goes on in
Python from that instant.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from drivers.vgpu.engine import A_DONE_NS
from drivers.vgpu.policies.compiled import (
    AT_BEGIN,
    AT_END,
    AT_MASK,
    AT_POS,
    AT_PRIO,
    AT_STOLEN,
    AT_STREAM,
    D_DURATION_NS,
    D_FMAX,
    D_FMIN,
    D_FSTEP,
    D_FULL_MASK,
    D_GEN,
    D_HANDLE,
    D_NATOMS,
    D_NCLOCKS,
    D_NFIFOS,
    D_NLAT,
    D_NOW,
    D_NSTREAMS,
    D_NTIMERS,
    D_NTPCS,
    D_SEQ,
    D_SWITCH_NS,
    D_WARMUP_NS,
    FH_Q,
    K_BLOCK_NS,
    K_BPT,
    K_COMPUTE,
    K_DEMAND,
    K_GRID,
    K_ISO,
    K_MEM,
    K_PROFILE,
    K_SMS,
    K_UNITS,
    MAX_COMPILED_TPCS,
    N_AT_ROWS,
    N_DEV_SCALARS,
    N_FH_ROWS,
    N_K_ROWS,
    N_ST_ROWS,
    N_TM_ROWS,
    SCRATCH_STREAMS,
    ST_ACOUNT,
    ST_ALLOC_TPC_NS,
    ST_AOFF,
    ST_BLOCKS_DONE,
    ST_COMPLETED,
    ST_CTX,
    ST_DCAP,
    ST_DHEAD,
    ST_DLEN,
    ST_DOFF,
    ST_GRID,
    ST_HAS_KERNEL,
    ST_HOST_NS,
    ST_HP,
    ST_INFLIGHT,
    ST_KERNELS_DONE,
    ST_KIND,
    ST_KOFF,
    ST_LAUNCHED,
    ST_NEXT_ARRIVAL,
    ST_NKERN,
    ST_PCAP,
    ST_PHEAD,
    ST_PLEN,
    ST_POFF,
    ST_POS,
    ST_READY_NS,
    ST_REQUEST_NS,
    ST_RUN_AHEAD,
    Dev,
    Pol,
    set_clock,
)
from drivers.vgpu.policies.compiled import (
    AT_LAUNCH_NS as AT_LAUNCH,
)
from drivers.vgpu.policies.compiled import (
    AT_ORDER as AT_ORD,
)
from drivers.vgpu.sharing import epoch
from drivers.vgpu.sharing.device import TraceAtom
from drivers.vgpu.work import BlockCost

if TYPE_CHECKING:
    from drivers.vgpu.sharing.sim import Simulation

KINDS = {"open": 0, "closed": 1, "be": 2}
_START_ATOMS = 1 << 14
_START_TIMERS = 1 << 13
_START_LAT = 1 << 13
_START_FIFOS = 1 << 10


def compilable(sim: Simulation) -> bool:
    """Whether `sim` can run compiled at all (whatever its policy)."""
    return (
        sim.n_tpcs <= MAX_COMPILED_TPCS
        and not sim.gpu.record_blocks
        and not sim.gpu._fifo_of  # a fresh device
        and sim.gpu.dispatch_order == "launch"
    )


#: The owner of a compiled policy's timers once handed back: never in charge.
_SWITCHED_OUT = object()


def _nothing() -> None:
    pass


def _doubled(table: np.ndarray) -> np.ndarray:
    """`table` with twice the columns, the new ones zero."""
    grown = np.zeros((table.shape[0], 2 * table.shape[1]), table.dtype)
    grown[:, : table.shape[1]] = table
    return grown


class CompiledRun:
    """The epoch loop's tables for one simulation, and the Python timers between epochs."""

    def __init__(self, sim: Simulation, pol: Pol) -> None:
        self.sim = sim
        self.pol = pol
        streams = sim.streams
        n = len(streams)
        spec = sim.spec
        kernels = [k for s in streams for k in s.kernels]
        kern = np.zeros((N_K_ROWS, max(1, len(kernels))), np.int64)
        costs: dict[int, BlockCost] = {}
        for j, k in enumerate(kernels):
            cost = costs.get(id(k))
            if cost is None:
                cost = costs[id(k)] = BlockCost.of(k, spec)
            kern[K_GRID, j] = k.grid_blocks
            kern[K_BPT, j] = k.blocks_per_tpc
            kern[K_UNITS, j] = cost.units
            kern[K_COMPUTE, j] = cost.compute_ns
            kern[K_MEM, j] = cost.mem_ns
            kern[K_DEMAND, j] = cost.demand_mbps
            kern[K_BLOCK_NS, j] = k.block_duration_ns
        st = np.zeros((N_ST_ROWS, n), np.int64)
        arrivals: list[int] = []
        koff = poff = doff = 0
        for s in streams:
            i = s.index
            t = s.tenant
            kern[K_ISO, koff : koff + s.n_kernels] = s.iso_ns
            kern[K_SMS, koff : koff + s.n_kernels] = s.sms
            kern[K_PROFILE, koff : koff + s.n_kernels] = s.profiles
            st[ST_KIND, i] = KINDS[t.kind]
            st[ST_HP, i] = int(s.hp)
            st[ST_POS, i] = -1
            st[ST_NKERN, i] = s.n_kernels
            st[ST_KOFF, i] = koff
            st[ST_RUN_AHEAD, i] = s.run_ahead
            st[ST_AOFF, i] = len(arrivals)
            st[ST_ACOUNT, i] = len(t.arrivals_ns)
            st[ST_POFF, i] = poff
            st[ST_PCAP, i] = len(t.arrivals_ns) + 1
            st[ST_DOFF, i] = doff
            st[ST_DCAP, i] = max(1, s.run_ahead)
            st[ST_CTX, i] = s.ctx
            arrivals.extend(t.arrivals_ns)
            koff += s.n_kernels
            poff += len(t.arrivals_ns) + 1
            doff += max(1, s.run_ahead)
        sc = np.zeros(N_DEV_SCALARS, np.int64)
        sc[D_NOW] = sim.now_ns
        sc[D_SEQ] = sim._seq
        sc[D_GEN] = 1
        sc[D_NATOMS] = len(sim.atom_owner)
        sc[D_WARMUP_NS] = sim.warmup_ns
        sc[D_DURATION_NS] = sim.duration_ns
        sc[D_NSTREAMS] = n
        sc[D_NTPCS] = sim.n_tpcs
        sc[D_FULL_MASK] = sim.full_mask
        sc[D_FMAX] = spec.max_clock_mhz
        sc[D_FMIN] = spec.min_clock_mhz
        sc[D_FSTEP] = spec.clock_step_mhz
        sc[D_SWITCH_NS] = spec.switch_latency_ns
        clock_w = [spec.dynamic_power_per_tpc_w(mhz) for mhz in spec.clocks_mhz]
        clock_log = np.zeros((2, 64 + len(sim.clock_log)), np.int64)
        for j, (effective, mhz) in enumerate(sim.clock_log):
            clock_log[:, j] = effective, mhz
        sc[D_NCLOCKS] = len(sim.clock_log)
        fifo_hash = np.zeros((N_FH_ROWS, 4 * _START_FIFOS), np.int64)
        fifo_hash[FH_Q] = -1
        self.dev = Dev(
            eng=sim.gpu._st,
            sc=sc,
            st=st,
            busy=np.zeros(n, np.float64),
            kern=kern,
            arrivals=np.array(arrivals, dtype=np.int64),
            pend=np.zeros(max(1, poff), np.int64),
            done=np.zeros(max(1, doff), np.int64),
            timers=np.zeros((N_TM_ROWS, _START_TIMERS), np.int64),
            atoms=np.zeros((N_AT_ROWS, _START_ATOMS), np.int64),
            fifo_hash=fifo_hash,
            ctx_order=np.zeros(max(s.ctx for s in streams) + 1, np.int64),
            lat=np.zeros((2, _START_LAT), np.int64),
            clock_w=np.array(clock_w, dtype=np.float64),
            clock_log=clock_log,
            scratch=np.zeros(SCRATCH_STREAMS + n, np.int64),
            words=np.zeros(sim.gpu._st.fifo_mask.shape[1], np.uint64),
        )
        self._grow_engine(_START_ATOMS, _START_FIFOS)
        self.pol = self._sized(pol)
        # Python timers: handle -> (fn, args, owner).
        self._python: dict[int, tuple[Callable, tuple, Any]] = {}
        self._handles = 0
        for t_ns, seq, owner, fn, args in sorted(sim._timers):
            self._push_python(t_ns, seq, fn, args, owner)
        sim._timers.clear()

    # -- tables ---------------------------------------------------------------

    def _grow_engine(self, atoms: int, fifos: int) -> None:
        self.sim.gpu.ensure_capacity(atoms, fifos)
        self.dev = self.dev._replace(eng=self.sim.gpu._st)

    def _sized(self, pol: Pol) -> Pol:
        """`pol` with its per-atom table as wide as the atom table."""
        width = self.dev.atoms.shape[1]
        if pol.t.shape[1] < width:
            t = np.zeros((pol.t.shape[0], width), np.int64)
            t[:, : pol.t.shape[1]] = pol.t
            pol = pol._replace(t=t)
        return pol

    def _grow(self) -> None:
        """Give every table that `epoch.needs_room` finds short twice its room."""
        short = epoch.needs_room(self.dev)
        d = self.dev
        if short & epoch.ROOM_ATOMS:
            d = d._replace(atoms=_doubled(d.atoms))
        if short & epoch.ROOM_TIMERS:
            d = d._replace(timers=_doubled(d.timers))
        if short & epoch.ROOM_LATENCIES:
            d = d._replace(lat=_doubled(d.lat))
        if short & epoch.ROOM_CLOCK_LOG:
            d = d._replace(clock_log=_doubled(d.clock_log))
        self.dev = d
        gpu = self.sim.gpu
        if short & epoch.ROOM_ENGINE_CLOCKS:
            gpu._grow("clocks", 2 * gpu._st.clocks.shape[1] + epoch.SPARE_CLOCKS)
            gpu._grow("clock_dyn_w", gpu._st.clocks.shape[1])
        fifos = gpu._st.fifos.shape[1]
        if short & epoch.ROOM_FIFOS:
            fifos = 2 * (int(d.sc[D_NFIFOS]) + epoch.SPARE_FIFOS)
            self._rehash(1 << (4 * fifos - 1).bit_length())  # a power of two, as it probes
        self._grow_engine(d.atoms.shape[1], fifos)
        self.pol = self._sized(self.pol)
        if epoch.needs_room(self.dev):  # never loop: growing must make room
            raise RuntimeError(f"the compiled run's tables did not grow ({short:#x})")

    def _rehash(self, size: int) -> None:
        old = self.dev.fifo_hash
        new = np.zeros((N_FH_ROWS, size), np.int64)
        new[FH_Q] = -1
        self.dev = self.dev._replace(fifo_hash=new)
        epoch.rehash(self.dev, old)

    # -- timers -----------------------------------------------------------------

    def _push_python(self, t_ns: int, seq: int | None, fn: Callable, args: tuple, owner) -> None:
        self._handles += 1
        self._python[self._handles] = (fn, args, owner)
        sc = self.dev.sc
        if seq is not None:  # a timer set before the run keeps its place
            saved = int(sc[D_SEQ])
            sc[D_SEQ] = seq - 1
            epoch.push_python_timer(self.dev, t_ns, self._handles)
            sc[D_SEQ] = saved
        else:
            epoch.push_python_timer(self.dev, t_ns, self._handles)

    def call_at(self, t_ns: int, fn: Callable, args: tuple, owner: Any) -> None:
        self._push_python(t_ns, None, fn, args, owner)

    def set_clock(self, clock_mhz: int) -> int:
        """A clock request from Python (a power advisor), in the one clock log."""
        self.sim.spec.check_clock(clock_mhz)
        return int(set_clock(self.dev, clock_mhz))

    def clock_log(self) -> list[tuple[int, int]]:
        n = int(self.dev.sc[D_NCLOCKS])
        log = self.dev.clock_log[:, :n]
        return list(zip(log[0].tolist(), log[1].tolist(), strict=True))

    # -- the run ----------------------------------------------------------------

    def start(self) -> None:
        epoch.start(self.dev, self.pol)

    def advance(self, end_ns: int) -> None:
        sim = self.sim
        while True:
            d = self.dev
            status = epoch.run_epoch(d, self.pol, end_ns)
            sim.now_ns = int(d.sc[D_NOW])
            if status == epoch.EPOCH_GROW:
                self._grow()
            elif status == epoch.EPOCH_PYTHON:
                fn, args, owner = self._python.pop(int(d.sc[D_HANDLE]))
                if owner is None or owner is sim.policy:
                    fn(*args)
                if sim.compiled is not self:  # handed back to the Python form
                    sim.run_timers()  # the rest of the timers due now, then the loop
                    sim.advance(end_ns)
                    return
            else:
                return

    def switch(self, policy, pol: Pol) -> None:
        """Put `policy` in charge, its compiled state `pol` (set up already)."""
        d = self.dev
        old = self.pol
        d.sc[D_GEN] += 1
        new = self._sized(pol)
        epoch.policy_setup(d, new)
        epoch.switch_policy(d, old, new)
        self.pol = new

    # -- reading back -----------------------------------------------------------

    def inflight_masks(self) -> list[int]:
        out = np.zeros(len(self.sim.streams), np.int64)
        epoch.inflight_masks(self.dev, out)
        return [int(m) for m in out]

    def atom_log(self) -> list[tuple[int, ...]]:
        """Per atom: stream, launch, done (-1: not yet), begin, end, mask, priority, order."""
        d = self.dev
        n = int(d.sc[D_NATOMS])
        a = d.atoms[:, :n]
        done = d.eng.atoms[A_DONE_NS, :n]
        rows = zip(
            a[AT_STREAM].tolist(), a[AT_LAUNCH].tolist(), done.tolist(), a[AT_BEGIN].tolist(),
            a[AT_END].tolist(), a[AT_MASK].tolist(), a[AT_PRIO].tolist(), a[AT_ORD].tolist(),
            strict=True,
        )  # fmt: skip
        return [tuple(r) for r in rows]

    def report(self) -> dict[str, Any]:
        return self.sim.policy.compiled_report(self.pol)

    def trace_atoms(self) -> tuple[TraceAtom, ...]:
        """The atoms launched in the trace window and done, in the order they completed."""
        window = self.sim.trace_window_ns
        if window is None:
            return ()
        d = self.dev
        n = int(d.sc[D_NATOMS])
        launch = d.atoms[AT_LAUNCH, :n]
        done = d.eng.atoms[A_DONE_NS, :n]
        chosen = np.nonzero((done >= 0) & (launch >= window[0]) & (launch < window[1]))[0]
        chosen = chosen[np.lexsort((chosen, done[chosen]))]  # by completion, then atom id
        streams = self.sim.streams
        rows = d.atoms[:, chosen].T.tolist()
        out = []
        for row, finished in zip(rows, done[chosen].tolist(), strict=True):
            s = row[AT_STREAM]
            name = streams[s].kernels[row[AT_POS]].name
            out.append(
                TraceAtom(
                    s,
                    name,
                    row[AT_LAUNCH],
                    finished,
                    row[AT_MASK],
                    row[AT_PRIO],
                    bool(row[AT_STOLEN]),
                )  # fmt: skip
            )
        return tuple(out)

    def hand_back(self) -> None:
        """Write the run's state into the simulation's Python objects (and the
        engine's bookkeeping), so that the Python loop goes on from now.

        The compiled policy is being switched out: it detaches, its state
        is dropped, and its timers run nothing, as a Python policy's would."""
        sim, d, gpu = self.sim, self.dev, self.sim.gpu
        epoch.policy_detach(d, self.pol)
        self.write_back_counters()
        log = self.atom_log()
        n = len(log)
        streams = sim.streams
        # The harness's per-atom lists, and the engine's.
        sim.atom_owner = [streams[row[0]] for row in log]
        sim.atom_launch_ns = [row[1] for row in log]
        sim.atom_tpcs = [row[5].bit_count() for row in log]
        sim.atom_stolen = [bool(x) for x in d.atoms[AT_STOLEN, :n].tolist()]
        if sim.record_launches:
            sim.launch_log = [(r[0], r[1], *r[3:]) for r in log]
        window = sim.trace_window_ns
        sim.trace_atoms = list(self.trace_atoms())
        gpu._atom_kernel = [-1] * n
        gpu._atom_ctx = [streams[row[0]].ctx for row in log]
        gpu._atom_blocks = [row[4] - row[3] for row in log]
        gpu._atom_done_ns = [None if row[2] < 0 else row[2] for row in log]
        for s in streams:
            st = d.st[:, s.index]
            s.done_ns.clear()
            cap, head, off = int(st[ST_DCAP]), int(st[ST_DHEAD]), int(st[ST_DOFF])
            s.done_ns.extend(int(d.done[off + (head + k) % cap]) for k in range(int(st[ST_DLEN])))
            s.grid = int(st[ST_GRID])
            s.launched = int(st[ST_LAUNCHED])
            s.ready_ns = int(st[ST_READY_NS])
            s.inflight_masks = {}
            s.inflight_priorities = {}
            gpu._open_atoms[s.ctx] = 0
            sim._ctx_order[s.ctx] = gpu._ctx_order[s.ctx] = int(d.ctx_order[s.ctx])
            s.desc = None
            if st[ST_HAS_KERNEL]:  # its kernel, as the engine's bookkeeping knows one
                pos = s.pos
                s.desc = s.kernels[pos]
                s.kernel_iso_ns, s.kernel_sms = s.iso_ns[pos], s.sms[pos]
                s.kernel_profile, s.kernel_key = s.profiles[pos], (s.index, pos)
                s.kernel_id = gpu.add_kernel(s.desc)
                gpu._kernel_blocks_done[s.kernel_id] = int(st[ST_BLOCKS_DONE])
        for atom, (i, launch, done, begin, end, mask, prio, _order) in enumerate(log):
            if done >= 0:
                continue
            s = streams[i]
            s.inflight_masks[atom] = mask
            s.inflight_priorities[atom] = prio
            gpu._atom_kernel[atom] = s.kernel_id
            gpu._open_atoms[s.ctx] += 1
            gpu._launched_begins[s.kernel_id].append(begin)
            gpu._launched_ends[s.kernel_id].append(end)
            if window is not None and window[0] <= launch < window[1]:
                sim._atom_priority[atom] = prio
        for s in streams:
            if s.desc is not None:
                order = sorted(zip(gpu._launched_begins[s.kernel_id],
                                   gpu._launched_ends[s.kernel_id], strict=True))  # fmt: skip
                gpu._launched_begins[s.kernel_id] = [b for b, _ in order]
                gpu._launched_ends[s.kernel_id] = [e for _, e in order]
        fh = d.fifo_hash
        for h in np.nonzero(fh[FH_Q] >= 0)[0]:
            key = tuple(int(x) for x in fh[1:, h])
            gpu._fifo_of[key] = int(fh[FH_Q, h])  # type: ignore[index]
        # The timers: the harness's, the Python ones, and the policy's as
        # stops that run nothing (as a switched-out policy's timers are).
        sim._seq = int(d.sc[D_SEQ])
        sim._timers.clear()
        tm = d.timers[:, : int(d.sc[D_NTIMERS])]
        for t_ns, seq, _owner, kind, arg in tm.T.tolist():
            if kind == epoch.TK_PYTHON:
                fn, args, who = self._python[arg]
                sim._timers.append((t_ns, seq, who, fn, args))
            elif kind == epoch.TK_ARRIVE:
                sim._timers.append((t_ns, seq, None, sim._arrive, (streams[arg],)))
            elif kind == epoch.TK_ENQUEUED:
                sim._timers.append((t_ns, seq, None, sim._enqueued, (streams[arg],)))
            else:  # a compiled policy's: it never runs, but the loop still stops there
                sim._timers.append((t_ns, seq, _SWITCHED_OUT, _nothing, ()))
        heapq.heapify(sim._timers)
        sim.now_ns = int(d.sc[D_NOW])
        sim.clock_log = self.clock_log()

    def write_back_counters(self) -> None:
        """Each stream's counters and queues, into its Python object."""
        d = self.dev
        n_lat = int(d.sc[D_NLAT])
        lat = d.lat[:, :n_lat]
        for s in self.sim.streams:
            i = s.index
            st = d.st[:, i]
            s.latencies_ns = lat[1, lat[0] == i].tolist()
            s.completed = int(st[ST_COMPLETED])
            s.kernels_done = int(st[ST_KERNELS_DONE])
            s.busy_tpc_ns = float(d.busy[i])
            s.alloc_tpc_ns = int(st[ST_ALLOC_TPC_NS])
            s.pos = int(st[ST_POS])
            s.request_ns = int(st[ST_REQUEST_NS])
            s.host_ns = int(st[ST_HOST_NS])
            s.inflight = int(st[ST_INFLIGHT])
            s.next_arrival = int(st[ST_NEXT_ARRIVAL])
            cap, head = int(st[ST_PCAP]), int(st[ST_PHEAD])
            off = int(st[ST_POFF])
            s.pending.clear()
            s.pending.extend(int(d.pend[off + (head + k) % cap]) for k in range(int(st[ST_PLEN])))

"""A `Simulation` run in the one loop (`drivers/vgpu/sharing`).

`LoopRun` lays a simulation's tenants, kernels and arrivals out as the
tables of the loop (epoch.py), runs it between Python timers, grows its
tables when they fill, and reads the results back.  The loop runs compiled
(`epoch.COMPILED`) or, the same functions, interpreted (`epoch.INTERPRETED`):
interpreted while a researcher's Python policy is in charge
(python_policy.py) or on a device wider than 63 TPCs, whose masks do not
fit an int64 (the tables then hold Python ints).  A policy switch may move
the run from one to the other at its instant; the tables are the same.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from drivers.vgpu import warm
from drivers.vgpu.engine import A_DONE_NS
from drivers.vgpu.sharing import dispatch, epoch, python_policy, registry
from drivers.vgpu.sharing.compiled import (
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
    D_NSTREAMS,
    D_NTPCS,
    D_OPEN_ATOM,
    D_PROGRAMS,
    D_STOP_KERNEL,
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
    P_ID,
    SCRATCH_STREAMS,
    ST_ACOUNT,
    ST_ALLOC_TPC_NS,
    ST_AOFF,
    ST_COMPLETED,
    ST_CTX,
    ST_DCAP,
    ST_DOFF,
    ST_HP,
    ST_KERNELS_DONE,
    ST_KIND,
    ST_KOFF,
    ST_NEXT_ARRIVAL,
    ST_NKERN,
    ST_PCAP,
    ST_PHEAD,
    ST_PLEN,
    ST_POFF,
    ST_POS,
    ST_REQUEST_NS,
    ST_RUN_AHEAD,
    Dev,
    Layout,
    Pol,
    empty_pol,
    grown_table,
    held_table,
    pack_state,
    unpack_state,
)
from drivers.vgpu.sharing.compiled import (
    AT_LAUNCH_NS as AT_LAUNCH,
)
from drivers.vgpu.sharing.compiled import (
    AT_ORDER as AT_ORD,
)
from drivers.vgpu.sharing.stream import kernel_profile, kernel_sms
from drivers.vgpu.work import BlockCost, KernelDesc

if TYPE_CHECKING:
    from drivers.vgpu.sharing.sim import Simulation

#: A policy with no compiled callbacks (a researcher's own, in Python).
PYTHON_POLICY = registry.PYTHON_POLICY

#: The loop's integer tables (their integers are Python ints while interpreted).
_INT_TABLES = (
    "sc", "st", "kern", "arrivals", "pend", "done", "timers", "atoms", "fifo_hash", "ctx_order",
    "lat", "clock_log", "scratch", "free", "fin", "fifo_free",
)  # fmt: skip

KINDS = {"open": 0, "closed": 1, "be": 2}
_START_ATOMS = 1 << 14
_START_TIMERS = 1 << 13
_START_LAT = 1 << 13
_START_FIFOS = 1 << 10


@attrs.frozen
class TraceAtom:
    """One atom, for the Chrome trace."""

    stream: int
    kernel: str
    launch_ns: int
    done_ns: int
    mask: int
    priority: int
    stolen: bool


def device_scalars(sim: Any) -> np.ndarray:
    """The loop's scalars of `sim`'s device (`D_*`): its TPCs, clocks, and
    no policy generation but the first; the rest zero."""
    spec = sim.spec
    sc = np.zeros(N_DEV_SCALARS, object)  # the full mask may not fit an int64
    sc[D_GEN] = 1
    sc[D_NTPCS] = sim.n_tpcs
    sc[D_FULL_MASK] = sim.full_mask
    sc[D_FMAX] = spec.max_clock_mhz
    sc[D_FMIN] = spec.min_clock_mhz
    sc[D_FSTEP] = spec.clock_step_mhz
    sc[D_SWITCH_NS] = spec.switch_latency_ns
    sc[D_STOP_KERNEL] = -1
    return sc


def new_tables(sim: Any, sc: np.ndarray, n_streams: int, **tables: np.ndarray) -> Dev:
    """The loop's tables for `sim`'s device, scalars `sc` and `n_streams`
    streams: fresh and empty, but for `tables` (by `Dev` field) and a stream
    table of `n_streams` columns, unless given."""
    spec = sim.spec
    fifo_hash = np.zeros((N_FH_ROWS, 4 * _START_FIFOS), np.int64)
    fifo_hash[FH_Q] = -1
    empty = {
        "eng": sim.gpu._st,
        "sc": sc,
        "st": np.zeros((N_ST_ROWS, n_streams), np.int64),
        "busy": np.zeros(n_streams, np.float64),
        "kern": np.zeros((N_K_ROWS, 1), np.int64),
        "arrivals": np.zeros(1, np.int64),
        "pend": np.zeros(1, np.int64),
        "done": np.zeros(1, np.int64),
        "timers": np.zeros((N_TM_ROWS, _START_TIMERS), np.int64),
        "atoms": np.zeros((N_AT_ROWS, _START_ATOMS), np.int64),
        "fifo_hash": fifo_hash,
        "ctx_order": np.zeros(1, np.int64),
        "lat": np.zeros((2, 1), np.int64),
        "clock_w": np.array(
            [spec.dynamic_power_per_tpc_w(mhz) for mhz in spec.clocks_mhz], np.float64
        ),
        "clock_log": np.zeros((2, 64), np.int64),
        "scratch": np.zeros(SCRATCH_STREAMS + n_streams, np.int64),
        "words": np.zeros(sim.gpu._st.fifo_mask.shape[1], np.uint64),
        "free": np.zeros(1, np.int64),
        "fin": np.zeros((2, 1), np.int64),
        "fifo_free": np.zeros(1, np.int64),
    }
    return Dev(**{**empty, **tables})


def kernel_column(kernel: KernelDesc, spec: Any) -> np.ndarray:
    """The rows of the kernel table that follow from `kernel` alone."""
    cost = BlockCost.of(kernel, spec)
    column = np.zeros(N_K_ROWS, np.int64)
    rows = {
        K_GRID: kernel.grid_blocks, K_BPT: kernel.blocks_per_tpc, K_UNITS: cost.units,
        K_COMPUTE: cost.compute_ns, K_MEM: cost.mem_ns, K_DEMAND: cost.demand_mbps,
        K_BLOCK_NS: kernel.block_duration_ns, K_ISO: kernel.isolated_duration_ns(spec.n_tpcs),
        K_SMS: kernel_sms(kernel, spec), K_PROFILE: kernel_profile(kernel),
    }  # fmt: skip
    for row, value in rows.items():
        column[row] = value
    return column


def compiled_fits(sim: Simulation) -> bool:
    """Whether `sim`'s device fits the compiled loop (masks in an int64)."""
    return sim.n_tpcs <= MAX_COMPILED_TPCS


def compiled_module(policy: Any) -> str:
    """The module of `policy`'s compiled callbacks: that of the class that defines its
    `compiled_setup`, or the one it names (`SharingPolicy.compiled_module`)."""
    for cls in type(policy).__mro__:
        if "compiled_setup" in vars(cls):
            return vars(cls).get("compiled_module") or cls.__module__
    raise TypeError(f"{type(policy).__name__} has no compiled form")


def widened(table: np.ndarray, n: int) -> np.ndarray:
    """`table` with at least `n` columns (its last axis; at least twice as
    many, if it grows), the new ones zero."""
    if table.shape[-1] >= n:
        return table
    grown = np.zeros((*table.shape[:-1], max(n, 2 * table.shape[-1])), table.dtype)
    grown[..., : table.shape[-1]] = table
    return grown


def _doubled(table: np.ndarray) -> np.ndarray:
    """`table` with twice the columns, the new ones zero."""
    return widened(table, 2 * table.shape[-1])


def _ints(table: np.ndarray, interpreted: bool) -> np.ndarray:
    """An integer table as the mode holds it: int64 compiled, Python ints interpreted."""
    if table.dtype.kind not in "iO":
        return table
    return table.astype(object if interpreted else np.int64)


class DirectCalls:
    """The compiled loop's entry points, its hot ones (`run_epoch`,
    `program_submit`, `needs_room`) called past numba's dispatcher.

    The dispatcher works out the numba type of every argument on every
    call, and the tables are two tuples of some forty arrays: that costs
    about 40 us a call, the compiled function itself about 7 us when it has
    little to do (the booted driver calls it at every wake and launch).
    The tables (`Dev`) and a policy's state (`Pol`) are immutable tuples,
    replaced whenever one of their arrays is, so their types are worked out
    once per pair of tuples, by the dispatcher's own `typeof_pyval`, and the
    compiled overload for exactly those types is called.  Tables for which
    none is compiled go through the dispatcher, which compiles one."""

    def __init__(self) -> None:
        self._d: Any = None
        self._p: Any = None
        self._enter: Any = None
        self._room: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(epoch.COMPILED, name)  # the rest, through the dispatchers

    def _bind(self, d: Any, p: Any) -> None:
        enter, room = epoch.ENTER, epoch.DISPATCHERS["needs_room"]
        td, tp, i = enter.typeof_pyval(d), enter.typeof_pyval(p), enter.typeof_pyval(0)
        found = enter.overloads.get((td, tp, tp, i, i, i))
        self._enter = None if found is None else found.entry_point
        found = room.overloads.get((td,))
        self._room = None if found is None else found.entry_point
        self._d, self._p = d, p

    def run_epoch(self, d: Any, p: Any, end_ns: int) -> int:
        if d is not self._d or p is not self._p:
            self._bind(d, p)
        if self._enter is None:
            return epoch.COMPILED.run_epoch(d, p, end_ns)
        return self._enter(d, p, p, epoch.OP_RUN, int(end_ns), 0)

    def program_submit(self, d: Any, p: Any, s: int, k: int) -> None:
        if d is not self._d or p is not self._p:
            self._bind(d, p)
        if self._enter is None:
            epoch.COMPILED.program_submit(d, p, s, k)
        else:
            self._enter(d, p, p, epoch.OP_SUBMIT, int(s), int(k))

    def needs_room(self, d: Any) -> int:
        if d is not self._d or self._room is None:
            return epoch.COMPILED.needs_room(d)
        return self._room(d)


class LoopRun:
    """The loop's tables for one simulation, and the Python timers between epochs."""

    _handles = 0  # Python policies' handles in `python_policy.RUNS`

    def __init__(self, sim: Any, policy: Any) -> None:
        """`sim`: the `Device` the policy is in charge of (a `Simulation`,
        or the driver's `StreamScheduler`); `policy`: the one in charge."""
        self.sim = sim
        self.dev = self._tables()
        self._grow_engine(max(_START_ATOMS, self.dev.atoms.shape[1]), _START_FIFOS)
        # Interpreted until the policy in charge is known (its setup may set timers).
        self.interpreted = True
        self.fns = epoch.INTERPRETED
        sim.loop = self  # a Python policy's setup may look at the streams
        for s in sim.streams:
            s.loop = self
        # Python timers: handle -> (fn, args, owner).
        self._python: dict[int, tuple[Callable, tuple, Any]] = {}
        self._timer_handles = 0
        pol, dtype = self._state(policy)
        self._set_mode(self._interpreted_for(pol))
        self.pol, self.pol_layout = self._held(pol, dtype), dtype
        self._compiled_now()

    def _tables(self) -> Dev:
        """A simulation's tenants, kernels and arrivals, as the loop's tables."""
        sim = self.sim
        streams = sim.streams
        n = len(streams)
        spec = sim.spec
        kernels = [k for s in streams for k in s.kernels]
        kern = np.zeros((N_K_ROWS, max(1, len(kernels))), np.int64)
        columns: dict[int, np.ndarray] = {}
        for j, k in enumerate(kernels):
            column = columns.get(id(k))
            if column is None:
                column = columns[id(k)] = kernel_column(k, spec)
            kern[:, j] = column
        st = np.zeros((N_ST_ROWS, n), np.int64)
        arrivals: list[int] = []
        koff = poff = doff = 0
        for s in streams:
            i = s.index
            t = s.tenant
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
        sc = device_scalars(sim)
        sc[D_WARMUP_NS] = sim.warmup_ns
        sc[D_DURATION_NS] = sim.duration_ns
        sc[D_NSTREAMS] = n
        clock_log = np.zeros((2, 64 + len(sim.early_clocks)), np.int64)
        for j, (effective, mhz) in enumerate(sim.early_clocks):
            clock_log[:, j] = effective, mhz
        sc[D_NCLOCKS] = len(sim.early_clocks)
        return new_tables(
            sim, sc, n, st=st, kern=kern,
            arrivals=np.array(arrivals, dtype=np.int64),
            pend=np.zeros(max(1, poff), np.int64),
            done=np.zeros(max(1, doff), np.int64),
            ctx_order=np.zeros(max(s.ctx for s in streams) + 1, np.int64),
            lat=np.zeros((2, _START_LAT), np.int64),
            clock_log=clock_log,
        )  # fmt: skip

    # -- the mode ---------------------------------------------------------------

    def _interpreted_for(self, pol: Pol) -> bool:
        """Whether the loop runs interpreted with the policy of state `pol` in charge."""
        sim = self.sim
        return not (sim.use_compiled and compiled_fits(sim)) or pol.i[P_ID] == PYTHON_POLICY

    def _set_mode(self, interpreted: bool) -> None:
        """Run compiled or interpreted from now on: the tables' integers as the mode holds them."""
        d = self.dev
        self.dev = d._replace(**{f: _ints(getattr(d, f), interpreted) for f in _INT_TABLES})
        self.interpreted = interpreted
        if hasattr(self, "pol"):
            self.pol = self._held(self.pol, self.pol_layout)
        self.fns = epoch.INTERPRETED if interpreted else DirectCalls()

    def _compiled_now(self) -> None:
        """Running compiled: have every entry point compiled (or loaded from
        numba's cache) now, saying so if it takes a while (warm.py).  Every
        run's tables have the same types (a policy's state is bytes), so once
        each dispatcher has its one signature there is nothing to do."""
        if not self.interpreted and not all(f.overloads for f in epoch.DISPATCHERS.values()):
            entries = warm.loop_entries(epoch.DISPATCHERS, self.dev, self.pol)
            warm.ensure_compiled("the GPU sharing loop", entries)

    def _held(self, pol: Pol, layout: Layout) -> Pol:
        """`pol` as the mode holds it, as wide as the atom table; `layout`:
        the dtypes of its named state and tables."""
        v = pol.v
        if layout.state is not None:
            if self.interpreted and v.dtype != object:
                v = np.empty(1, object)
                v[0] = unpack_state(pol.v, layout.state)
            elif not self.interpreted and v.dtype == object:
                v = pack_state(pol.v[0], layout.state)
        at = held_table(pol.at, layout.atom, self.interpreted)
        kn = held_table(pol.kn, layout.kernel, self.interpreted)
        named = ("v", "at", "kn")  # converted above, by their dtypes
        ints = {f: _ints(getattr(pol, f), self.interpreted) for f in pol._fields if f not in named}
        pol = pol._replace(v=v, at=at, kn=kn, **ints)
        return self._sized(pol, layout)

    def _state(self, policy: Any) -> tuple[Pol, Layout]:
        """`policy`'s loop state, set up on this run (its integers Python
        ints), and the dtypes of its named state and tables."""
        pol = policy.compiled_setup(self.sim)
        if pol is None:  # a Python policy: it sets itself up, and runs interpreted
            LoopRun._handles += 1
            python_policy.RUNS[LoopRun._handles] = (self.sim, policy)
            policy.attach(self.sim)
            pol = empty_pol(PYTHON_POLICY, python_policy.P_HANDLE + 1)
            pol.i[python_policy.P_HANDLE] = LoopRun._handles
            layout = Layout()
        else:
            module = compiled_module(policy)
            pol.i[P_ID] = dispatch.POLICY_IDS[module]
            layout = Layout.of(importlib.import_module(module))
        named = ("v", "at", "kn")  # held as `_held` converts them
        ints = {f: _ints(getattr(pol, f), True) for f in pol._fields if f not in named}
        return pol._replace(**ints), layout

    def _release(self, pol: Pol) -> None:
        """Forget a Python policy's handle once it is out of charge."""
        if pol.i[P_ID] == PYTHON_POLICY:
            python_policy.RUNS.pop(int(pol.i[python_policy.P_HANDLE]), None)

    def finish(self) -> None:
        """The run is over."""
        self._release(self.pol)

    # -- tables ---------------------------------------------------------------

    def _grow_engine(self, atoms: int, fifos: int) -> None:
        self.sim.gpu.ensure_capacity(atoms, fifos)
        self.dev = self.dev._replace(eng=self.sim.gpu._st)

    def _sized(self, pol: Pol, layout: Layout | None = None) -> Pol:
        """`pol` with its per-atom tables as wide as the atom table; `layout`:
        its dtypes (by default, those of the policy in charge)."""
        layout = self.pol_layout if layout is None else layout
        width = self.dev.atoms.shape[1]
        return pol._replace(at=grown_table(pol.at, layout.atom, width))

    def _grow(self) -> None:
        """Give every table that `epoch.needs_room` finds short twice its room."""
        short = self.fns.needs_room(self.dev)
        d = self.dev
        if short & epoch.ROOM_ATOMS:
            d = d._replace(atoms=_doubled(d.atoms))
            if d.sc[D_PROGRAMS]:  # room on the free stack for every atom id
                d = d._replace(free=widened(d.free, d.atoms.shape[1]))
        if short & epoch.ROOM_FINISHED:
            d = d._replace(fin=_doubled(d.fin))
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
        if self.fns.needs_room(self.dev):  # never loop: growing must make room
            raise RuntimeError(f"the compiled run's tables did not grow ({short:#x})")

    def _rehash(self, size: int) -> None:
        old = self.dev.fifo_hash
        new = _ints(np.zeros((N_FH_ROWS, size), np.int64), self.interpreted)
        new[FH_Q] = -1
        self.dev = self.dev._replace(fifo_hash=new)
        self.fns.rehash(self.dev, old)

    # -- timers -----------------------------------------------------------------

    def _push_python(self, t_ns: int, fn: Callable, args: tuple, owner) -> None:
        self._timer_handles += 1
        self._python[self._timer_handles] = (fn, args, owner)
        self.fns.push_python_timer(self.dev, t_ns, self._timer_handles)

    def call_at(self, t_ns: int, fn: Callable, args: tuple, owner: Any) -> None:
        self._push_python(t_ns, fn, args, owner)

    def set_clock(self, clock_mhz: int) -> int:
        """A clock request from Python (a power advisor), in the one clock log."""
        self.sim.spec.check_clock(clock_mhz)
        if self.fns.needs_room(self.dev):
            self._grow()
        return int(self.fns.set_clock(self.dev, clock_mhz))

    def clock_log(self) -> list[tuple[int, int]]:
        n = int(self.dev.sc[D_NCLOCKS])
        log = self.dev.clock_log[:, :n]
        return list(zip(log[0].tolist(), log[1].tolist(), strict=True))

    # -- the run ----------------------------------------------------------------

    def start(self) -> None:
        self.fns.start(self.dev, self.pol)

    def advance(self, end_ns: int) -> None:
        sim = self.sim
        while True:
            d = self.dev
            status = self.fns.run_epoch(d, self.pol, end_ns)
            if status == epoch.EPOCH_GROW:
                self._grow()
            elif status == epoch.EPOCH_BLOCK_LOG:
                gpu = self.sim.gpu
                gpu._grow("log", 2 * gpu._st.log.shape[1] + 1)
                self.dev = self.dev._replace(eng=gpu._st)
            elif status == epoch.EPOCH_PYTHON:
                fn, args, owner = self._python.pop(int(d.sc[D_HANDLE]))
                if owner is None or owner is sim.policy:
                    fn(*args)
            else:
                return

    def switch(self, policy: Any) -> None:
        """Put `policy` in charge while running: it is set up, the old one
        detaches, and the new one is offered every kernel with blocks left.

        A Python policy is in charge only while the loop runs interpreted, so
        a switch from or to one runs interpreted; the run then goes on in the
        new policy's mode.  If the new policy's setup raises, the old one
        stays in charge."""
        new, dtype = self._state(policy)
        interpreted = self._interpreted_for(new)
        if interpreted and not self.interpreted:
            self._set_mode(True)
        new = self._held(new, dtype)
        d = self.dev
        d.sc[D_GEN] += 1
        self.fns.setup_policy(d, new)
        self.fns.switch_policy(d, self.pol, new)
        self._release(self.pol)
        self.pol, self.pol_layout = new, dtype
        if interpreted != self.interpreted:
            self._set_mode(interpreted)
        self._compiled_now()

    # -- reading back -----------------------------------------------------------

    def inflight_masks(self) -> list[int]:
        out = _ints(np.zeros(len(self.sim.streams), np.int64), self.interpreted)
        self.fns.inflight_masks(self.dev, out)
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
        return [tuple(int(x) for x in r) for r in rows]

    def report(self) -> dict[str, Any]:
        if self.pol.i[P_ID] == PYTHON_POLICY:
            return self.sim.policy.report()
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
        rows = [[int(x) for x in row] for row in d.atoms[:, chosen].T.tolist()]
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

    def write_back_counters(self) -> None:
        """Each stream's counters and queues, into its Python object."""
        d = self.dev
        n_lat = int(d.sc[D_NLAT])
        lat = d.lat[:, :n_lat]
        for s in self.sim.streams:
            i = s.index
            st = d.st[:, i]
            s.latencies_ns = [int(x) for x in lat[1, lat[0] == i].tolist()]
            s.completed = int(st[ST_COMPLETED])
            s.kernels_done = int(st[ST_KERNELS_DONE])
            s.busy_tpc_ns = float(d.busy[i])
            s.alloc_tpc_ns = int(st[ST_ALLOC_TPC_NS])
            s.request_ns = int(st[ST_REQUEST_NS])
            s.next_arrival = int(st[ST_NEXT_ARRIVAL])
            cap, head = int(st[ST_PCAP]), int(st[ST_PHEAD])
            off = int(st[ST_POFF])
            s.pending.clear()
            s.pending.extend(int(d.pend[off + (head + k) % cap]) for k in range(int(st[ST_PLEN])))

    # -- what a Python policy asks of the device (the `Device` protocol) --------

    def launch(self, s: int, blocks: int, mask: int, priority: int, stolen: bool, order) -> int:
        """`Device.launch` on stream `s`, from a Python policy (interpreted)."""
        order = -1 if order is None else order
        return int(
            epoch.INTERPRETED_LAUNCH(self.dev, s, blocks, mask, priority, int(stolen), order)
        )

    def stream_row(self, s: int, row: int) -> int:
        return int(self.dev.st[row, s])

    def inflight_of(self, s: int) -> dict[int, tuple[int, int]]:
        """Stream `s`'s atoms in flight: atom id -> (mask, priority)."""
        d = self.dev
        first, n = int(d.sc[D_OPEN_ATOM]), int(d.sc[D_NATOMS])  # every atom below first is done
        while first < n and d.eng.atoms[A_DONE_NS, first] >= 0:
            first += 1
        d.sc[D_OPEN_ATOM] = first
        done = d.eng.atoms[A_DONE_NS, first:n]
        out = {}
        for i in np.nonzero((done < 0) & (d.atoms[AT_STREAM, first:n] == s))[0].tolist():
            a = first + i
            out[a] = (int(d.atoms[AT_MASK, a]), int(d.atoms[AT_PRIO, a]))
        return out

"""What a compiled policy sees of the device, and how it keeps its state (`drivers/vgpu/policies`).

A shipped policy's callbacks are module-level functions decorated with
`compiled_fn`: plain Python, which numba compiles into the one loop
(`drivers/vgpu/sharing/epoch.py`) where the loop calls them, or which run as
they are when the loop runs interpreted.  This file holds what they share:
the layout of the harness's tables (`Dev`), a policy's state (`Pol`), and
what a policy asks of the device (`launch`, `policy_call_at`, `set_clock`,
and accessors of a stream's current kernel).

Masks are int64 bit sets while compiled, so the compiled loop serves
devices of at most 63 TPCs (the a100 has 54); on a wider device the loop
runs interpreted, with Python ints.

The compiled functions run without numba's reference counting
(``_nrt=False``): they allocate nothing (`Dev.scratch` holds what they
would), and every array they touch lives as long as the run.

A policy keeps its state by name: `named_state` declares its fields (read
``st = state(p)``, then ``st["owner"]``), `named_table` its per-atom and
per-(stream, kernel) records.  Compiled, they are records over bytes, so
numba sees one `Pol` type for every policy; interpreted, dicts and
structured arrays of Python values.  ``i[P_ID]`` names the policy in
charge (`drivers/vgpu/sharing/registry.py` assigns the ids).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from numba import njit
from numba.core import ir_utils
from numba.extending import overload, register_jitable

from drivers.vgpu.engine import (
    K_MHZ,
    K_TIME,
    S_CLK_HEAD,
    S_CLK_TAIL,
    S_CLOCK,
    EngineState,
    _add_fifo,
    _bit_index,
    _push_atom,
)

#: Devices wider than this run the loop interpreted, with Python-int masks.
MAX_COMPILED_TPCS = 63

# Device scalars, in `Dev.sc`.
D_NOW = 0
D_SEQ = 1  # timers pushed so far (ties in time go in push order)
D_NTIMERS = 2
D_NATOMS = 3  # the next atom id
D_NFIFOS = 4
D_GEN = 5  # the policy generation in charge: timers of others are dropped
D_WARMUP_NS = 6
D_DURATION_NS = 7
D_NSTREAMS = 8
D_NTPCS = 9
D_FULL_MASK = 10
D_NLAT = 11
D_IN_TIMERS = 12  # 1 while the due timers are being run
D_HANDLE = 13  # the Python timer the loop stopped for
D_OPEN_ATOM = 14  # every atom below it is complete
D_FMAX = 15
D_FMIN = 16
D_FSTEP = 17
D_SWITCH_NS = 18  # a clock change takes effect this long after it is asked
D_NCLOCKS = 19  # entries in the clock log
# A device of programs' streams (the booted driver, `ProgramRun`) runs for
# as long as the machine does: it recycles the ids of completed atoms and of
# empty FIFOs (stacks in `Dev.free` and `Dev.fifo_free`; D_RECYCLE), logs
# each finished kernel in `Dev.fin` for the driver, and may stop when one
# kernel finishes.
D_PROGRAMS = 20  # 1: a device of programs' streams
D_NFREE = 21  # atom ids on the free stack
D_NFIN = 22  # entries in the finished-kernel log
D_STOP_KERNEL = 23  # the epoch ends once this kernel column finishes (-1: none)
D_RECYCLE = (
    24  # 1: completed atoms' ids are recycled (0: kept, as an engine with history keeps them)
)
D_NFIFO_FREE = 25  # FIFO ids on the free stack `Dev.fifo_free` (recycled with the atoms)
N_DEV_SCALARS = 26

# Rows of the stream table `Dev.st`, one column per stream.
ST_KIND = 0  # 0 open, 1 closed, 2 best effort
ST_HP = 1
ST_POS = 2  # the current kernel's place in the request, -1 between requests
ST_NKERN = 3
ST_KOFF = 4  # the stream's first kernel in the kernel table
ST_HOST_NS = 5
ST_RUN_AHEAD = 6
ST_REQUEST_NS = 7
ST_NEXT_ARRIVAL = 8
ST_AOFF = 9  # its arrivals in `Dev.arrivals`
ST_ACOUNT = 10
ST_PHEAD = 11  # its queue of pending requests: a ring in `Dev.pend`
ST_PLEN = 12
ST_POFF = 13
ST_PCAP = 14
ST_DOFF = 15  # completion times of its last `run_ahead` kernels: a ring in `Dev.done`
ST_DCAP = 16
ST_DHEAD = 17
ST_DLEN = 18
ST_CTX = 19
ST_HAS_KERNEL = 20
ST_GRID = 21
ST_LAUNCHED = 22
ST_INFLIGHT = 23
ST_READY_NS = 24
ST_BLOCKS_DONE = 25
ST_KERNELS_DONE = 26
ST_COMPLETED = 27
ST_ALLOC_TPC_NS = 28
ST_KCOL = 29  # the current kernel's column in the kernel table
ST_SLOT = 30  # its slot in the per-(stream, kernel) tables: the position, or a program kernel's
ST_QHEAD = 31  # a program stream's kernels queued behind its current one: a list
ST_QTAIL = 32  # linked through the kernel table's K_NEXT (-1: empty)
N_ST_ROWS = 33

# A stream's kind (ST_KIND): a tenant's (sim.py), or a program's (the driver's).
KIND_OPEN = 0
KIND_CLOSED = 1
KIND_BE = 2
KIND_PROGRAM = 3

# Rows of the kernel table `Dev.kern`, one column per kernel of every stream's request.
K_GRID = 0
K_BPT = 1  # blocks per TPC
K_UNITS = 2
K_COMPUTE = 3
K_MEM = 4
K_DEMAND = 5
K_ISO = 6  # isolated time on the whole device
K_SMS = 7
K_PROFILE = 8
K_BLOCK_NS = 9
# A program's kernel: when it was launched, its slot, the next queued
# kernel of its stream, and the mask and priority its launch asked for.
K_HOST_NS = 10
K_SLOT = 11
K_NEXT = 12
K_MASK = 13
K_PRIO = 14
N_K_ROWS = 15

# Rows of the atom table `Dev.atoms`: the atom log.
AT_STREAM = 0
AT_LAUNCH_NS = 1
AT_TPCS = 2
AT_STOLEN = 3
AT_MASK = 4
AT_BEGIN = 5
AT_END = 6
AT_PRIO = 7
AT_ORDER = 8
AT_POS = 9  # the kernel's slot (ST_SLOT): its place in the request, in a simulation
N_AT_ROWS = 10

# Rows of the timer heap `Dev.timers`.
TM_T = 0
TM_SEQ = 1
TM_OWNER = 2  # 0: the harness's; else the policy generation that set it
TM_KIND = 3
TM_ARG = 4
N_TM_ROWS = 5

# Timer kinds: the harness's, then each policy's from POLICY_TIMERS on.
TK_PYTHON = 0  # a Python callback: the epoch ends here
TK_ARRIVE = 1
TK_ENQUEUED = 2
POLICY_TIMERS = 16

# Rows of the FIFO hash `Dev.fifo_hash` (open addressing on the FIFO key).
FH_Q = 0  # -1: empty
FH_CTX = 1
FH_PRIO = 2
FH_UNITS = 3
FH_MASK = 4
N_FH_ROWS = 5

P_ID = 0  # in `Pol.i`: which policy


def compiled_fn(fn: Callable | None = None, *, inline: bool = False) -> Any:
    """A function of the sharing layer: it stays a plain Python function,
    which numba compiles into the compiled loop wherever the loop calls it
    (`register_jitable`), without reference counting.  The same source thus
    runs compiled (the loop's entry points, `sharing/epoch.py`'s `COMPILED`)
    or interpreted, step by step (`INTERPRETED`: a researcher's Python
    policy, a device wider than 63 TPCs, a debugger).  With `inline`, numba
    inlines it where it is called: a call passes the whole `Dev` tuple,
    which costs more than a small accessor.

    numba makes it no C wrapper, which nothing calls: the loop links it in.
    Each function so compiled is a library of its own, which LLVM optimizes
    and turns into machine code with everything it calls: a cold compile's
    CPU grows with how deep the calls from an entry point go."""
    wrap = register_jitable(
        _nrt=False, no_cfunc_wrapper=True, inline="always" if inline else "never"
    )
    return wrap if fn is None else wrap(fn)


def compiled_entry(fn: Callable) -> Any:
    """The compiled, cached form of a layer function that Python calls."""
    return njit(cache=True, _nrt=False)(fn)


#: Where `Dev.scratch` keeps a list of streams.
SCRATCH_STREAMS = 8


class Dev(NamedTuple):
    """The harness's tables: the engine, streams, kernels, timers, atoms."""

    eng: EngineState
    sc: np.ndarray  # int64 D_* scalars
    st: np.ndarray  # int64 [N_ST_ROWS, streams]
    busy: np.ndarray  # float64 per stream: busy TPC time, ns
    kern: np.ndarray  # int64 [N_K_ROWS, kernels]
    arrivals: np.ndarray  # int64, every open stream's arrival instants
    pend: np.ndarray  # int64, the pending-request rings
    done: np.ndarray  # int64, the run-ahead rings
    timers: np.ndarray  # int64 [N_TM_ROWS, capacity], a binary min-heap
    atoms: np.ndarray  # int64 [N_AT_ROWS, capacity]
    fifo_hash: np.ndarray  # int64 [N_FH_ROWS, capacity], a power of two
    ctx_order: np.ndarray  # int64 per context: its last launch's order
    lat: np.ndarray  # int64 [2, capacity]: (stream, latency) of finished requests
    clock_w: np.ndarray  # float64 per clock step from f_min: a busy TPC's dynamic power
    clock_log: np.ndarray  # int64 [2, capacity]: (effective time, MHz) of each request
    #: Room for values a compiled function would otherwise allocate (the
    #: compiled functions run without numba's reference counting): a popped
    #: timer in [0, 8), a list of streams from SCRATCH_STREAMS on.
    scratch: np.ndarray
    words: np.ndarray  # uint64: a mask as the engine's FIFO mask words
    free: np.ndarray  # int64: recycled atom ids, a stack (a device of programs)
    fin: np.ndarray  # int64 [2, capacity]: (kernel column, time) of finished program kernels
    fifo_free: np.ndarray  # int64: recycled FIFO ids, a stack (a device of programs)


class Pol(NamedTuple):
    """One compiled policy's state (see the module doc)."""

    #: Its named state (`named_state`): the record's bytes while the loop
    #: runs compiled, a dict of Python values while it runs interpreted.
    v: np.ndarray
    #: Its named tables (`named_table`): a record per atom, grown with the
    #: atom table (`at`, of its module's `ATOM`), and per (stream, kernel
    #: position) (`kn`, of its `KERNEL`).  Compiled, the records' bytes
    #: (uint8; a row's records end to end); interpreted, a structured
    #: array whose integers are Python ints (`atom_record` and
    #: `kernel_record` read either).
    at: np.ndarray
    kn: np.ndarray
    #: The harness's: the policy's id (``i[P_ID]``), a Python policy's handle.
    i: np.ndarray
    #: Per stream, a float64 ring a policy sizes by a parameter (TGS's
    #: recent high-priority rates).
    rates: np.ndarray


def empty_pol(pid: int, n_i: int = 1) -> Pol:
    """An empty policy state, with ``i[P_ID] = pid``."""
    # Python ints, which hold the masks of any device; the loop converts
    # them to int64 when it runs compiled (`epoch_run.LoopRun`).
    i = np.zeros(max(1, n_i), object)
    i[P_ID] = pid
    return Pol(
        v=np.zeros(1, np.uint8),
        at=np.zeros(1, np.uint8),
        kn=np.zeros((1, 1), np.uint8),
        i=i,
        rates=np.zeros((1, 1), np.float64),
    )


# -- a policy's named state -----------------------------------------------------

#: Per-stream values a policy's state holds (a set of streams is an int64 bit set).
MAX_STREAMS = 63
#: Per-TPC values a policy's state holds (a device wider than 63 TPCs runs interpreted).
MAX_TPCS = 128


def named_state(**fields: Any) -> np.dtype:
    """A policy's state as one aligned numpy record: each field a type
    (``np.int64``, ``np.float64``) or ``(type, n)`` for n values (per stream:
    `MAX_STREAMS`, per TPC: `MAX_TPCS`).  A field that extends another
    policy's state lists that state's fields first, in the same order."""
    return np.dtype(
        [(name, *(spec if isinstance(spec, tuple) else (spec,))) for name, spec in fields.items()],
        align=True,
    )


def new_state(dtype: np.dtype, pid: int, **values: Any) -> Pol:
    """A fresh `Pol` for policy id `pid` whose named state, of `dtype`, is
    zero but for `values`: a dict of Python values (ints of any width)."""
    st: dict[str, Any] = {}
    for name in dtype.names:
        base, shape = dtype[name].base, dtype[name].shape
        zero = 0.0 if base.kind == "f" else 0
        st[name] = np.full(shape, zero, object if zero == 0 else np.float64) if shape else zero
    for name, value in values.items():
        if name not in st:
            raise KeyError(f"no field {name!r} in the state")
        if dtype[name].shape:
            if len(value) > len(st[name]):
                raise ValueError(
                    f"{len(value)} values for {name!r}, which holds at most {len(st[name])}"
                    f" (a compiled policy serves at most {MAX_STREAMS} streams)"
                )
            st[name][: len(value)] = value
        else:
            st[name] = float(value) if dtype[name].kind == "f" else value
    pol = empty_pol(pid)
    v = np.empty(1, object)
    v[0] = st
    return pol._replace(v=v)


def pack_state(st: dict[str, Any], dtype: np.dtype) -> np.ndarray:
    """The named state `st` (a dict) as the bytes of one `dtype` record."""
    rec = np.zeros(1, dtype)
    for name in dtype.names:
        rec[0][name] = st[name]
    return rec.view(np.uint8).copy()


def unpack_state(raw: np.ndarray, dtype: np.dtype) -> dict[str, Any]:
    """The bytes of one `dtype` record as a dict of Python values."""
    rec = raw[: dtype.itemsize].view(dtype)[0]
    st: dict[str, Any] = {}
    for name in dtype.names:
        value = rec[name]
        if dtype[name].shape:
            st[name] = (
                np.array(value.tolist(), object) if dtype[name].base.kind in "iub" else value.copy()
            )
        else:
            st[name] = value.item()
    return st


def state_values(pol: Pol, dtype: np.dtype) -> dict[str, Any]:
    """A policy's named state, from Python, whichever way the loop holds it."""
    return pol.v[0] if pol.v.dtype == object else unpack_state(pol.v, dtype)


def _alias_first_argument(lhs, args, alias_map, arg_aliases):
    """For numba's alias analysis: what an accessor returns is its first argument's memory."""
    rhs = args[0].name
    if rhs in arg_aliases:
        arg_aliases.add(lhs)
    else:
        alias_map.setdefault(rhs, set()).add(lhs)
        alias_map.setdefault(lhs, set()).add(rhs)


def _accessor(fn: Callable) -> Callable:
    """`fn`, an accessor of a policy's named state or tables, known to numba's
    dead-code elimination to return memory of its argument `p`.

    numba removes a store into an array that aliases no argument and is not
    used after it.  A record made by ``.view`` aliases nothing it knows of,
    so ``st["busy_until"][t] = x``, the last use of `st`, would vanish in a
    function where numba inlines anything.  For the same reason an accessor
    is not inlined: the record it returns must be defined in its caller's
    own block, where the analysis sees the alias."""
    ir_utils.alias_func_extensions[(fn.__name__, fn.__module__)] = _alias_first_argument
    return fn


def state_of(dtype: np.dtype) -> Callable:
    """The accessor of a policy's named state of `dtype`: ``st = state(p)``,
    then ``st["owner"]``.  Compiled, a record over the bytes of `Pol.v`;
    interpreted, the dict of Python values itself.  `dtype` may be a prefix
    of the state's (a policy that extends another's state)."""
    size = dtype.itemsize

    @_accessor
    def state(p):
        return p.v[0]

    @overload(state, jit_options={"_nrt": False})
    def _state_compiled(p):
        def record(p):
            return p.v[:size].view(dtype)[0]

        return record

    return state


# -- a policy's named tables ------------------------------------------------------


class Layout(NamedTuple):
    """The dtypes of a policy's named state and tables, as its compiled
    module declares them (`STATE`, `ATOM`, `KERNEL`); None where it has none."""

    state: np.dtype | None = None
    atom: np.dtype | None = None
    kernel: np.dtype | None = None

    @classmethod
    def of(cls, module: Any) -> Layout:
        return cls(*(getattr(module, name, None) for name in ("STATE", "ATOM", "KERNEL")))


def named_table(**fields: Any) -> np.dtype:
    """The record of a policy's table, one per atom (`Pol.at`) or per
    (stream, kernel position) (`Pol.kn`): each field ``np.int64`` or
    ``np.float64``."""
    for name, spec in fields.items():
        if spec not in (np.int64, np.float64):
            raise TypeError(f"table field {name!r} is {spec!r}: np.int64 or np.float64")
    return named_state(**fields)


def _interpreted_record(dtype: np.dtype) -> np.dtype:
    """`dtype` as the interpreted loop holds it: its integers Python ints."""
    return np.dtype(
        [(name, object if dtype[name].kind == "i" else dtype[name]) for name in dtype.names]
    )


def new_table(dtype: np.dtype, shape: Any, **values: Any) -> np.ndarray:
    """A policy's table of `shape` records of `dtype`, zero but for `values`
    (one value a field), as the interpreted loop holds it."""
    table = np.zeros(shape, _interpreted_record(dtype))
    for name, value in values.items():
        if name not in dtype.names:
            raise KeyError(f"no field {name!r} in the table")
        table[name] = value
    return table


def pack_table(table: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A table (a structured array) as its records' bytes: a row's records end to end."""
    rec = np.zeros(table.shape, dtype)
    for name in dtype.names:
        rec[name] = table[name]
    return rec.view(np.uint8)


def unpack_table(raw: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The bytes of a table of `dtype` records as a structured array of Python values."""
    rec = raw.view(dtype)
    table = np.zeros(rec.shape, _interpreted_record(dtype))
    for name in dtype.names:
        table[name] = rec[name]
    return table


def table_values(table: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A policy's table, from Python, whichever way the loop holds it."""
    return table if table.dtype.names else unpack_table(table, dtype)


def held_table(table: np.ndarray, dtype: np.dtype | None, interpreted: bool) -> np.ndarray:
    """A policy's table of `dtype` records (None: it has none) as the mode holds it."""
    if dtype is None:
        return table
    if interpreted:
        return table_values(table, dtype)
    return pack_table(table, dtype) if table.dtype.names else table


def grown_table(table: np.ndarray, dtype: np.dtype | None, n: int) -> np.ndarray:
    """A per-atom table of `dtype` records with room for `n`, the new ones zero."""
    if dtype is None:
        return table
    per_record = 1 if table.dtype.names else dtype.itemsize
    if len(table) >= n * per_record:
        return table
    grown = np.zeros(n * per_record, table.dtype)
    grown[: len(table)] = table
    return grown


def atom_record(dtype: np.dtype) -> Callable:
    """The accessor of an atom's record in a policy's per-atom table
    (`Pol.at`) of `dtype` records: ``atom_of = atom_record(ATOM)``, then
    ``atom_of(p, a)["stolen"]``.  Compiled, the record over the table's bytes;
    interpreted, the structured array's.  An accessor gives one record, not
    the table: a compiled function without reference counting returns no
    array but its arguments."""

    @_accessor
    def record_of_atom(p, a):
        return p.at[a]

    @overload(record_of_atom, jit_options={"_nrt": False})
    def _record_compiled(p, a):
        def record_of_bytes(p, a):
            return p.at.view(dtype)[a]

        return record_of_bytes

    return record_of_atom


def kernel_record(dtype: np.dtype) -> Callable:
    """The accessor of a kernel's record in a policy's table per (stream,
    kernel position) (`Pol.kn`) of `dtype` records: ``kernel_of =
    kernel_record(KERNEL)``, then ``kernel_of(p, s, pos)["sx"]`` (as `atom_record`)."""

    @_accessor
    def record_of_kernel(p, s, pos):
        return p.kn[s, pos]

    @overload(record_of_kernel, jit_options={"_nrt": False})
    def _record_compiled(p, s, pos):
        def record_of_bytes(p, s, pos):
            return p.kn.view(dtype)[s, pos]

        return record_of_bytes

    return record_of_kernel


# -- what a compiled policy asks of the device --------------------------------


def popcount(x):
    """The TPCs in mask `x` (any width, interpreted)."""
    return int(x).bit_count()


@overload(popcount, jit_options={"_nrt": False})
def _popcount_compiled(x):
    def popcount_swar(x):
        # SWAR, in unsigned arithmetic, whose overflow is defined: constant time.
        u = np.uint64(x)
        u = u - ((u >> np.uint64(1)) & np.uint64(0x5555555555555555))
        u = (u & np.uint64(0x3333333333333333)) + (
            (u >> np.uint64(2)) & np.uint64(0x3333333333333333)
        )
        u = (u + (u >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
        return np.int64((u * np.uint64(0x0101010101010101)) >> np.uint64(56))

    return popcount_swar


def lowest_tpc(x):
    """The index of the lowest bit set in mask `x`, non-zero (any width, interpreted)."""
    x = int(x)
    return (x & -x).bit_length() - 1


@overload(lowest_tpc, jit_options={"_nrt": False})
def _lowest_tpc_compiled(x):
    def lowest_tpc_int64(x):
        return _bit_index(np.uint64(x & -x))

    return lowest_tpc_int64


def mask_words(words, mask):
    """`mask` as the engine's FIFO mask words (any width, interpreted)."""
    mask = int(mask)
    for w in range(words.shape[0]):
        words[w] = np.uint64(mask & 0xFFFFFFFFFFFFFFFF)
        mask >>= 64


@overload(mask_words, jit_options={"_nrt": False})
def _mask_words_compiled(words, mask):
    def mask_words_int64(words, mask):
        words[:] = 0
        words[0] = np.uint64(mask)

    return mask_words_int64


@compiled_fn
def call_at(d, t_ns, kind, arg, owner):
    """Run timer `kind` with `arg` at `t_ns` (not before now); timers of a policy switched out are dropped."""
    sc, tm = d.sc, d.timers
    now = sc[D_NOW]
    if t_ns < now:
        t_ns = now
    sc[D_SEQ] += 1
    seq = sc[D_SEQ]
    i = sc[D_NTIMERS]
    if i >= tm.shape[1]:
        raise IndexError("the timer heap is full")
    sc[D_NTIMERS] = i + 1
    while i > 0:
        parent = (i - 1) >> 1
        if tm[TM_T, parent] < t_ns or (tm[TM_T, parent] == t_ns and tm[TM_SEQ, parent] < seq):
            break
        for r in range(N_TM_ROWS):
            tm[r, i] = tm[r, parent]
        i = parent
    tm[TM_T, i] = t_ns
    tm[TM_SEQ, i] = seq
    tm[TM_OWNER, i] = owner
    tm[TM_KIND, i] = kind
    tm[TM_ARG, i] = arg


@compiled_fn
def policy_call_at(d, t_ns, kind, arg):
    """A timer of the policy in charge (dropped if it is switched out)."""
    call_at(d, t_ns, kind, arg, d.sc[D_GEN])


@compiled_fn
def pop_timer(d, out):
    """Remove the first timer into `out` (its N_TM_ROWS fields)."""
    sc, tm = d.sc, d.timers
    for r in range(N_TM_ROWS):
        out[r] = tm[r, 0]
    n = sc[D_NTIMERS] - 1
    sc[D_NTIMERS] = n
    if n == 0:
        return
    t, seq = tm[TM_T, n], tm[TM_SEQ, n]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and (
            tm[TM_T, c + 1] < tm[TM_T, c]
            or (tm[TM_T, c + 1] == tm[TM_T, c] and tm[TM_SEQ, c + 1] < tm[TM_SEQ, c])
        ):
            c += 1
        if tm[TM_T, c] > t or (tm[TM_T, c] == t and tm[TM_SEQ, c] > seq):
            break
        for r in range(N_TM_ROWS):
            tm[r, i] = tm[r, c]
        i = c
    for r in range(N_TM_ROWS):
        tm[r, i] = tm[r, n]


@compiled_fn
def fifo_slot(fh, ctx, prio, units, mask):
    """The FIFO hash slot of this key: its entry, or the empty slot it goes in."""
    cap = fh.shape[1]
    # Masks of one tenant share their low bits (a contiguous range from its
    # first TPC): mix every bit in, and take the product's middle bits.
    x = (
        mask
        ^ ((ctx + 1) * 0x27D4EB2F165667C5)
        ^ ((prio + 7) * 0x165667B19E3779F9)
        ^ (units * 0x3C6EF372FE94F82B)
    )
    x ^= (x >> 32) & 0xFFFFFFFF
    h = ((x * 0x5851F42D4C957F2D) >> 29) & (cap - 1)
    while fh[FH_Q, h] >= 0:
        if (
            fh[FH_CTX, h] == ctx
            and fh[FH_PRIO, h] == prio
            and fh[FH_UNITS, h] == units
            and fh[FH_MASK, h] == mask
        ):
            break
        h = (h + 1) & (cap - 1)
    return h


@compiled_fn
def _fifo(d, ctx, prio, units, mask):
    """The engine FIFO for this key, set up on first use (as `Engine._fifo`)."""
    fh = d.fifo_hash
    cap = fh.shape[1]
    h = fifo_slot(fh, ctx, prio, units, mask)
    if fh[FH_Q, h] >= 0:
        return fh[FH_Q, h]
    if 2 * (d.sc[D_NFIFOS] - d.sc[D_NFIFO_FREE] + 1) > cap:
        raise IndexError("the FIFO hash is full")
    if d.sc[D_NFIFO_FREE] > 0:
        d.sc[D_NFIFO_FREE] -= 1
        q = d.fifo_free[d.sc[D_NFIFO_FREE]]
    else:
        q = d.sc[D_NFIFOS]
        if q >= d.eng.fifos.shape[1]:
            raise IndexError("the FIFO tables are full")
        d.sc[D_NFIFOS] = q + 1
    fh[FH_Q, h] = q
    fh[FH_CTX, h] = ctx
    fh[FH_PRIO, h] = prio
    fh[FH_UNITS, h] = units
    fh[FH_MASK, h] = mask
    mask_words(d.words, mask)
    _add_fifo(d.eng, q, ctx, prio, units, d.words)
    return q


@compiled_fn
def launch(d, s, blocks, mask, prio, stolen, order):
    """Launch the next `blocks` blocks of stream `s`'s kernel on `mask`; return the atom id.

    `order` < 0: now.  A context's work queue is
    first in, first out."""
    st, sc, kern = d.st, d.sc, d.kern
    now = sc[D_NOW]
    begin = st[ST_LAUNCHED, s]
    end = begin + blocks
    ctx = st[ST_CTX, s]
    last = d.ctx_order[ctx]
    if order < 0 or order < last:
        order = max(last, now if order < 0 else order)
    d.ctx_order[ctx] = order
    k = st[ST_KCOL, s]
    units = kern[K_UNITS, k]
    q = _fifo(d, ctx, prio, units, mask)
    if sc[D_NFREE] > 0:  # a recycled id: the atoms in flight may now be below D_OPEN_ATOM
        sc[D_NFREE] -= 1
        atom = d.free[sc[D_NFREE]]
        if atom < sc[D_OPEN_ATOM]:
            sc[D_OPEN_ATOM] = atom
    else:
        atom = sc[D_NATOMS]
        if atom >= d.atoms.shape[1] or atom >= d.eng.atoms.shape[1]:
            raise IndexError("the atom tables are full")
        sc[D_NATOMS] = atom + 1
    _push_atom(
        d.eng, atom, q, units, kern[K_COMPUTE, k], kern[K_MEM, k], kern[K_DEMAND, k], begin, end,
        ctx, order,
    )  # fmt: skip
    st[ST_LAUNCHED, s] = end
    st[ST_INFLIGHT, s] += 1
    at = d.atoms
    at[AT_STREAM, atom] = s
    at[AT_LAUNCH_NS, atom] = now
    at[AT_TPCS, atom] = popcount(mask)
    at[AT_STOLEN, atom] = stolen
    at[AT_MASK, atom] = mask
    at[AT_BEGIN, atom] = begin
    at[AT_END, atom] = end
    at[AT_PRIO, atom] = prio
    at[AT_ORDER, atom] = order
    at[AT_POS, atom] = st[ST_SLOT, s]
    return atom


# -- what a compiled policy knows of a stream (the `Stream` protocol) ---------


@compiled_fn(inline=True)
def host_order(d, s):
    return min(d.st[ST_HOST_NS, s], d.sc[D_NOW])


@compiled_fn(inline=True)
def kernel_pending(d, s):
    st = d.st
    return st[ST_POS, s] >= 0 and st[ST_LAUNCHED, s] < st[ST_GRID, s]


@compiled_fn(inline=True)
def remaining(d, s):
    return d.st[ST_GRID, s] - d.st[ST_LAUNCHED, s]


@compiled_fn(inline=True)
def kernel_index(d, s):
    """The current kernel's column in the kernel table."""
    return d.st[ST_KCOL, s]


@compiled_fn
def launch_whole(d, s, mask, prio, order):
    """Launch the rest of `s`'s current kernel as one atom (`SharingPolicy.launch_whole`)."""
    return launch(d, s, remaining(d, s), mask, prio, 0, order)


# -- the base policy's compiled form: whole kernels on a fixed mask ------------

#: The named state of a policy that launches each kernel whole on a fixed
#: mask, at a fixed priority (mps, mps-limit, priority).  MIG extends it:
#: its state lists these fields first.
STATIC_FIELDS = {
    "masks": (np.int64, MAX_STREAMS),  # each stream's TPC mask
    "priorities": (np.int64, MAX_STREAMS),  # each stream's priority
}
STATIC_STATE = named_state(**STATIC_FIELDS)
static_state = state_of(STATIC_STATE)


@compiled_fn
def static_launch(d, p, s, order):
    """`launch_whole(s, order)` on the stream's fixed mask, at its fixed priority."""
    st = static_state(p)
    return launch_whole(d, s, st["masks"][s], st["priorities"][s], order)


@compiled_fn
def static_kernel_ready(d, p, s):
    static_launch(d, p, s, host_order(d, s))


# -- what the admission policies share ------------------------------------------


@compiled_fn
def hp_running(d):
    """The high-priority streams whose kernel is on the device (a scratch
    list, good until the next call), and their count."""
    st = d.st
    out = d.scratch[SCRATCH_STREAMS:]
    n = 0
    for h in range(d.sc[D_NSTREAMS]):
        if st[ST_HP, h] and st[ST_HAS_KERNEL, h]:
            out[n] = h
            n += 1
    return out, n


# -- the clock ------------------------------------------------------------------


@compiled_fn(inline=True)
def clock_mhz(d):
    """The clock in effect now."""
    return d.eng.sc[S_CLOCK]


@compiled_fn
def set_clock(d, mhz):
    """Ask for a clock (a valid one); returns when it takes effect."""
    eng, sc = d.eng, d.sc
    effective = sc[D_NOW] + sc[D_SWITCH_NS]
    head, tail = eng.sc[S_CLK_HEAD], eng.sc[S_CLK_TAIL]
    if head == tail:
        head = tail = 0
    elif tail >= eng.clocks.shape[1]:
        raise IndexError("the clock request table is full")
    eng.clocks[K_TIME, tail] = effective
    eng.clocks[K_MHZ, tail] = mhz
    eng.clock_dyn_w[tail] = d.clock_w[(mhz - sc[D_FMIN]) // sc[D_FSTEP]]
    eng.sc[S_CLK_HEAD] = head
    eng.sc[S_CLK_TAIL] = tail + 1
    n = sc[D_NCLOCKS]
    if n >= d.clock_log.shape[1]:
        raise IndexError("the clock log is full")
    d.clock_log[0, n] = effective
    d.clock_log[1, n] = mhz
    sc[D_NCLOCKS] = n + 1
    return effective

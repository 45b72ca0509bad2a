"""The one loop of the sharing layer (`drivers/vgpu/sharing`).

Every sharing run is this loop: the experiments' `Simulation` (sim.py,
through epoch_run.py's `LoopRun`) and the booted driver's programs'
streams (`drivers/vgpu/scheduler.py`, through program_run.py's
`ProgramRun`).  Event by event it runs the engine's completions, the
policy's callbacks (dispatch.py, generated from registry.py), the hosts'
launches, arrivals, run-ahead, programs' queued kernels and every timer.
The functions are plain Python (`compiled_fn`): numba compiles the entry
points at the bottom (`COMPILED`), or the same functions run as they are
(`INTERPRETED`: a researcher's Python policy, a device wider than 63 TPCs,
a debugger).  The loop crosses into Python only at an *epoch boundary*: a
Python timer (the advisor follower's period, the warm-up mark, a TPC
sample), tables that need to grow, or the kernel a caller waits for
finishing.  Timers of both kinds share one heap and one sequence, so the
order of events does not depend on where the epochs end.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from drivers.vgpu.engine import A_BUSY_NS, A_DONE_NS, RUN_LOG_FULL, S_CLK_TAIL, S_NDONE, _run
from drivers.vgpu.sharing import dispatch
from drivers.vgpu.sharing.compiled import (
    AT_BEGIN,
    AT_END,
    AT_LAUNCH_NS,
    AT_MASK,
    AT_STREAM,
    AT_TPCS,
    D_DURATION_NS,
    D_GEN,
    D_HANDLE,
    D_IN_TIMERS,
    D_NATOMS,
    D_NCLOCKS,
    D_NFIFO_FREE,
    D_NFIFOS,
    D_NFIN,
    D_NFREE,
    D_NLAT,
    D_NOW,
    D_NSTREAMS,
    D_NTIMERS,
    D_OPEN_ATOM,
    D_PROGRAMS,
    D_RECYCLE,
    D_STOP_KERNEL,
    D_WARMUP_NS,
    FH_CTX,
    FH_MASK,
    FH_PRIO,
    FH_Q,
    FH_UNITS,
    K_BPT,
    K_GRID,
    K_HOST_NS,
    K_NEXT,
    K_SLOT,
    KIND_OPEN,
    KIND_PROGRAM,
    N_TM_ROWS,
    POLICY_TIMERS,
    ST_ACOUNT,
    ST_ALLOC_TPC_NS,
    ST_AOFF,
    ST_BLOCKS_DONE,
    ST_COMPLETED,
    ST_DCAP,
    ST_DHEAD,
    ST_DLEN,
    ST_DOFF,
    ST_GRID,
    ST_HAS_KERNEL,
    ST_HOST_NS,
    ST_INFLIGHT,
    ST_KCOL,
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
    ST_QHEAD,
    ST_QTAIL,
    ST_READY_NS,
    ST_REQUEST_NS,
    ST_RUN_AHEAD,
    ST_SLOT,
    TK_ARRIVE,
    TK_ENQUEUED,
    TK_PYTHON,
    TM_ARG,
    TM_KIND,
    TM_OWNER,
    TM_T,
    call_at,
    compiled_entry,
    compiled_fn,
    fifo_slot,
    launch,
    pop_timer,
    set_clock,
)

#: Host time to enqueue one kernel launch (sim.py's HOST_LAUNCH_NS).
HOST_LAUNCH_NS = 5_000

# What `run_epoch` stopped for.
EPOCH_REACHED = 0  # the end
EPOCH_PYTHON = 1  # a Python timer is due: its handle is in sc[D_HANDLE]
EPOCH_GROW = 2  # a table is close to full
EPOCH_BLOCK_LOG = 3  # the engine's block log (`record_blocks`) needs room
EPOCH_STOPPED = 4  # the kernel sc[D_STOP_KERNEL] finished

#: The engine's run stops at the first completion.  A numpy bool, not the
#: literal True: numba types a literal as a type of its own, and would
#: compile the engine's `_run` (about 20 s of CPU) a second time, beside
#: the one the interpreted loop and `Engine` call.
STOP_ON_COMPLETION = np.bool_(True)


# -- the policy in charge: dispatch.py, generated from registry.py -------------


@compiled_fn
def switch_policy(d, old, new):
    """A policy switch, once the new policy is set up: the old one detaches,
    and the new one is offered every kernel with blocks left."""
    dispatch.detach(d, old)
    st = d.st
    for s in range(d.sc[D_NSTREAMS]):
        if st[ST_POS, s] >= 0 and st[ST_LAUNCHED, s] < st[ST_GRID, s]:
            dispatch.kernel_ready(d, new, s)


# -- requests (sim.py) --------------------------------------------------------


@compiled_fn
def schedule_arrival(d, s):
    st = d.st
    n = st[ST_NEXT_ARRIVAL, s]
    if n < st[ST_ACOUNT, s]:
        t = d.arrivals[st[ST_AOFF, s] + n]
        if t < d.sc[D_DURATION_NS]:
            call_at(d, t, TK_ARRIVE, s, 0)


@compiled_fn
def arrive(d, p, s):
    st = d.st
    t = d.arrivals[st[ST_AOFF, s] + st[ST_NEXT_ARRIVAL, s]]
    st[ST_NEXT_ARRIVAL, s] += 1
    schedule_arrival(d, s)
    if st[ST_POS, s] >= 0:
        cap = st[ST_PCAP, s]
        if st[ST_PLEN, s] >= cap:
            raise IndexError("a pending-request ring is full")
        d.pend[st[ST_POFF, s] + (st[ST_PHEAD, s] + st[ST_PLEN, s]) % cap] = t
        st[ST_PLEN, s] += 1
    else:
        start_request(d, p, s, t)


@compiled_fn
def start_request(d, p, s, request_ns):
    d.st[ST_REQUEST_NS, s] = request_ns
    d.st[ST_POS, s] = 0
    ready(d, p, s)


@compiled_fn
def ready(d, p, s):
    st = d.st
    now = d.sc[D_NOW]
    start = st[ST_HOST_NS, s]
    if st[ST_RUN_AHEAD, s] == 0:
        if st[ST_POS, s] == 0:
            start = max(start, now)
    elif st[ST_DLEN, s] == st[ST_RUN_AHEAD, s]:
        start = max(start, d.done[st[ST_DOFF, s] + st[ST_DHEAD, s]])
    host = start + HOST_LAUNCH_NS
    st[ST_HOST_NS, s] = host
    st[ST_HAS_KERNEL, s] = 0
    if host > now:
        call_at(d, host, TK_ENQUEUED, s, 0)
    else:
        enqueued(d, p, s)


@compiled_fn
def enqueued(d, p, s):
    """The host's launch of `s`'s current kernel reached the GPU (`enqueue`)."""
    st = d.st
    pos = st[ST_POS, s]
    st[ST_KCOL, s] = st[ST_KOFF, s] + pos
    st[ST_SLOT, s] = pos
    on_device(d, p, s)


@compiled_fn
def on_device(d, p, s):
    """`s`'s current kernel (ST_KCOL) is on the GPU: offer it to the policy."""
    st = d.st
    k = st[ST_KCOL, s]
    st[ST_HAS_KERNEL, s] = 1
    st[ST_GRID, s] = d.kern[K_GRID, k]
    st[ST_LAUNCHED, s] = 0
    st[ST_BLOCKS_DONE, s] = 0
    st[ST_READY_NS, s] = d.sc[D_NOW]
    dispatch.kernel_ready(d, p, s)


@compiled_fn
def complete(d, p, s, atom, kernel_done):
    st = d.st
    now = d.sc[D_NOW]
    st[ST_INFLIGHT, s] -= 1
    warmup = d.sc[D_WARMUP_NS]
    if now >= warmup:  # atom_completed
        k = st[ST_KCOL, s]
        d.busy[s] += d.eng.atoms[A_BUSY_NS, atom] / d.kern[K_BPT, k]
        launched = d.atoms[AT_LAUNCH_NS, atom]
        st[ST_ALLOC_TPC_NS, s] += d.atoms[AT_TPCS, atom] * (now - max(launched, warmup))
    dispatch.atom_done(d, p, s, atom, kernel_done)
    if kernel_done:
        kernel_finished(d, p, s)


@compiled_fn
def kernel_finished(d, p, s):
    st = d.st
    if st[ST_KIND, s] == KIND_PROGRAM:
        program_kernel_finished(d, p, s)
        return
    now = d.sc[D_NOW]
    warmup = d.sc[D_WARMUP_NS]
    if now >= warmup:
        st[ST_KERNELS_DONE, s] += 1
    if st[ST_RUN_AHEAD, s]:  # a deque of at most run_ahead completion times
        cap = st[ST_DCAP, s]
        if st[ST_DLEN, s] == cap:
            st[ST_DHEAD, s] = (st[ST_DHEAD, s] + 1) % cap
            st[ST_DLEN, s] -= 1
        d.done[st[ST_DOFF, s] + (st[ST_DHEAD, s] + st[ST_DLEN, s]) % cap] = now
        st[ST_DLEN, s] += 1
    st[ST_POS, s] += 1
    if st[ST_POS, s] < st[ST_NKERN, s]:
        ready(d, p, s)
        return
    if st[ST_REQUEST_NS, s] >= warmup:
        n = d.sc[D_NLAT]
        if n >= d.lat.shape[1]:
            raise IndexError("the latency table is full")
        d.lat[0, n] = s
        d.lat[1, n] = now - st[ST_REQUEST_NS, s]
        d.sc[D_NLAT] = n + 1
    if now >= warmup:
        st[ST_COMPLETED, s] += 1
    st[ST_POS, s] = -1
    st[ST_HAS_KERNEL, s] = 0
    st[ST_GRID, s] = 0
    st[ST_LAUNCHED, s] = 0
    if st[ST_KIND, s] != KIND_OPEN:
        start_request(d, p, s, now)
    elif st[ST_PLEN, s]:
        t = d.pend[st[ST_POFF, s] + st[ST_PHEAD, s]]
        st[ST_PHEAD, s] = (st[ST_PHEAD, s] + 1) % st[ST_PCAP, s]
        st[ST_PLEN, s] -= 1
        start_request(d, p, s, t)
    else:
        dispatch.stream_idle(d, p, s)


# -- programs' streams (the booted driver's, program_run.py) ----------------------


@compiled_fn
def program_start(d, p, s, k):
    """Kernel column `k` becomes program stream `s`'s current kernel: it
    reached the GPU when its program launched it (K_HOST_NS)."""
    st, kern = d.st, d.kern
    st[ST_POS, s] = st[ST_NKERN, s]  # kernels the stream has taken so far
    st[ST_NKERN, s] += 1
    st[ST_KCOL, s] = k
    st[ST_SLOT, s] = kern[K_SLOT, k]
    st[ST_HOST_NS, s] = kern[K_HOST_NS, k]
    on_device(d, p, s)


@compiled_fn
def program_submit(d, p, s, k):
    """A program launched the kernel columns from `k` on stream `s`, a chain
    linked through K_NEXT and ending at -1 (a launch graph's kernels, or
    one): they run in order after the stream's earlier kernels
    (`StreamScheduler.submit`)."""
    st, kern = d.st, d.kern
    tail = k
    while kern[K_NEXT, tail] >= 0:
        tail = kern[K_NEXT, tail]
    if st[ST_POS, s] < 0:
        rest = kern[K_NEXT, k]
        kern[K_NEXT, k] = -1
        if rest >= 0:
            st[ST_QHEAD, s] = rest
            st[ST_QTAIL, s] = tail
        program_start(d, p, s, k)
        return
    last = st[ST_QTAIL, s]
    if last >= 0:
        kern[K_NEXT, last] = k
    else:
        st[ST_QHEAD, s] = k
    st[ST_QTAIL, s] = tail


@compiled_fn
def program_kernel_finished(d, p, s):
    """Log the finished kernel for the driver; start the stream's next one, or let it go idle."""
    st, sc = d.st, d.sc
    k = st[ST_KCOL, s]
    n = sc[D_NFIN]
    if n >= d.fin.shape[1]:
        raise IndexError("the finished-kernel log is full")
    d.fin[0, n] = k
    d.fin[1, n] = sc[D_NOW]
    sc[D_NFIN] = n + 1
    st[ST_KERNELS_DONE, s] += 1
    nxt = st[ST_QHEAD, s]
    if nxt >= 0:
        st[ST_QHEAD, s] = d.kern[K_NEXT, nxt]
        if st[ST_QHEAD, s] < 0:
            st[ST_QTAIL, s] = -1
        program_start(d, p, s, nxt)
        return
    st[ST_POS, s] = -1
    st[ST_HAS_KERNEL, s] = 0
    st[ST_GRID, s] = 0
    st[ST_LAUNCHED, s] = 0
    dispatch.stream_idle(d, p, s)


@compiled_fn
def fire(d, p, kind, arg):
    if kind == TK_ARRIVE:
        arrive(d, p, arg)
    elif kind == TK_ENQUEUED:
        enqueued(d, p, arg)
    elif kind >= POLICY_TIMERS:
        dispatch.timer(d, p, kind, arg)


# -- the loop --------------------------

# What `needs_room` finds short: a table that one more event could overflow.
ROOM_ATOMS = 1
ROOM_TIMERS = 2
ROOM_LATENCIES = 4
ROOM_FIFOS = 8
ROOM_CLOCK_LOG = 16
ROOM_ENGINE_CLOCKS = 32
ROOM_FINISHED = 64
#: Entries each table keeps free: more than one event can use.
SPARE_ATOMS = 4096
SPARE_FIFOS = 512
SPARE_CLOCKS = 16


@compiled_fn
def needs_room(d):
    """The tables (ROOM_* bits) with less room than their spare; 0: none."""
    sc, eng = d.sc, d.eng
    short = 0
    if sc[D_NATOMS] + SPARE_ATOMS > min(d.atoms.shape[1], eng.atoms.shape[1]):
        short |= ROOM_ATOMS
    if sc[D_NTIMERS] + SPARE_ATOMS > d.timers.shape[1]:
        short |= ROOM_TIMERS
    if not sc[D_PROGRAMS] and sc[D_NLAT] + SPARE_ATOMS > d.lat.shape[1]:
        short |= ROOM_LATENCIES
    live = sc[D_NFIFOS] - sc[D_NFIFO_FREE]
    ids_left = sc[D_NFIFO_FREE] + eng.fifos.shape[1] - sc[D_NFIFOS]
    if ids_left < SPARE_FIFOS or 2 * (live + SPARE_FIFOS) > d.fifo_hash.shape[1]:
        short |= ROOM_FIFOS
    if sc[D_NCLOCKS] + SPARE_CLOCKS > d.clock_log.shape[1]:
        short |= ROOM_CLOCK_LOG
    if eng.sc[S_CLK_TAIL] + SPARE_CLOCKS > eng.clocks.shape[1]:
        short |= ROOM_ENGINE_CLOCKS
    if sc[D_PROGRAMS] and sc[D_NFIN] + SPARE_ATOMS > d.fin.shape[1]:
        short |= ROOM_FINISHED
    return short


@compiled_fn
def run_epoch(d, p, end_ns):
    """Run to `end_ns`, or to the next Python timer, or until a table needs room."""
    sc, tm, eng = d.sc, d.timers, d.eng
    popped = d.scratch[:N_TM_ROWS]
    done = eng.done
    while True:
        if needs_room(d):
            return EPOCH_GROW
        if sc[D_IN_TIMERS]:  # run the timers due now
            while sc[D_NTIMERS] > 0 and tm[TM_T, 0] <= sc[D_NOW]:
                pop_timer(d, popped)
                if popped[TM_KIND] == TK_PYTHON:
                    sc[D_HANDLE] = popped[TM_ARG]
                    return EPOCH_PYTHON
                owner = popped[TM_OWNER]
                if owner == 0 or owner == sc[D_GEN]:
                    fire(d, p, popped[TM_KIND], popped[TM_ARG])
            sc[D_IN_TIMERS] = 0
        t_next = end_ns
        if sc[D_NTIMERS] > 0 and tm[TM_T, 0] < end_ns:
            t_next = tm[TM_T, 0]
        if _run(eng, t_next, STOP_ON_COMPLETION) == RUN_LOG_FULL:
            return EPOCH_BLOCK_LOG
        n = eng.sc[S_NDONE]
        if n > 0:
            # Completions, by atom id (`Engine._backend_run` sorts them).
            for i in range(1, n):
                a = done[i]
                j = i - 1
                while j >= 0 and done[j] > a:
                    done[j + 1] = done[j]
                    j -= 1
                done[j + 1] = a
            sc[D_NOW] = eng.atoms[A_DONE_NS, done[0]]
            for i in range(n):  # every kernel_done first, as `_complete_atom` does
                a = done[i]
                s = d.atoms[AT_STREAM, a]
                d.st[ST_BLOCKS_DONE, s] += d.atoms[AT_END, a] - d.atoms[AT_BEGIN, a]
                if d.st[ST_BLOCKS_DONE, s] == d.st[ST_GRID, s]:
                    done[i] = -a - 1  # marks the kernel's last atom
            stop = sc[D_STOP_KERNEL]
            stopped = False
            for i in range(n):
                a = done[i]
                kernel_done = a < 0
                if kernel_done:
                    a = -a - 1
                    s = d.atoms[AT_STREAM, a]
                    stopped = stopped or (stop >= 0 and d.st[ST_KCOL, s] == stop)
                complete(d, p, d.atoms[AT_STREAM, a], a, kernel_done)
            if sc[D_RECYCLE]:  # the completions are handled: their ids may name new atoms
                for i in range(n):
                    a = done[i]
                    d.free[sc[D_NFREE]] = -a - 1 if a < 0 else a
                    sc[D_NFREE] += 1
            if stopped:
                sc[D_STOP_KERNEL] = -1
                return EPOCH_STOPPED
            continue
        sc[D_NOW] = t_next
        if t_next >= end_ns:
            return EPOCH_REACHED
        sc[D_IN_TIMERS] = 1


@compiled_fn
def start(d, p):
    """`Simulation.run`'s start, once the policy is set up."""
    dispatch.setup(d, p)
    st = d.st
    for s in range(d.sc[D_NSTREAMS]):
        if st[ST_KIND, s] == KIND_OPEN:
            schedule_arrival(d, s)
        else:
            start_request(d, p, s, 0)


@compiled_fn
def push_python_timer(d, t_ns, handle):
    call_at(d, t_ns, TK_PYTHON, handle, 0)


@compiled_fn
def inflight_masks(d, out):
    """The union of the masks of each stream's atoms in flight, into `out`."""
    out[:] = 0
    first = d.sc[D_OPEN_ATOM]
    while first < d.sc[D_NATOMS] and d.eng.atoms[A_DONE_NS, first] >= 0:
        first += 1
    d.sc[D_OPEN_ATOM] = first
    for a in range(first, d.sc[D_NATOMS]):
        if d.eng.atoms[A_DONE_NS, a] < 0:
            out[d.atoms[AT_STREAM, a]] |= d.atoms[AT_MASK, a]


@compiled_fn
def rehash(d, old):
    """Put the entries of the FIFO hash `old` into the current, larger one."""
    fh = d.fifo_hash
    for h in range(old.shape[1]):
        if old[FH_Q, h] >= 0:
            slot = fifo_slot(fh, old[FH_CTX, h], old[FH_PRIO, h], old[FH_UNITS, h], old[FH_MASK, h])
            for r in range(old.shape[0]):
                fh[r, slot] = old[r, h]


@compiled_fn
def setup_policy(d, p):
    """What a policy's setup does on the running device (timers, a drain)."""
    dispatch.setup(d, p)


@compiled_fn
def detach_policy(d, p):
    dispatch.detach(d, p)


# -- the entry points: the loop compiled, or the same functions interpreted -------


class Entries(NamedTuple):
    """What Python calls of the loop (epoch_run.py)."""

    run_epoch: Any
    start: Any
    needs_room: Any
    push_python_timer: Any
    setup_policy: Any
    detach_policy: Any
    switch_policy: Any
    inflight_masks: Any
    rehash: Any
    set_clock: Any
    program_submit: Any


#: The functions above as they are: plain Python, step by step.
INTERPRETED = Entries(
    run_epoch, start, needs_room, push_python_timer, setup_policy, detach_policy, switch_policy,
    inflight_masks, rehash, set_clock, program_submit,
)  # fmt: skip

# What `enter` does: the entry points that reach the policies' callbacks.
OP_RUN, OP_START, OP_SETUP, OP_DETACH, OP_SWITCH, OP_SUBMIT = range(6)


@compiled_fn
def enter(d, p, q, op, a, b):
    """The one compiled entry point into the policies' code: `op` says
    which of run_epoch(d, p, a), start(d, p), setup_policy(d, p),
    detach_policy(d, p), switch_policy(d, p, q) and program_submit(d, p, a,
    b).  numba optimizes each entry point with everything it calls, so one
    entry compiles every policy once, not once per entry point."""
    if op == OP_RUN:
        return run_epoch(d, p, a)
    if op == OP_START:
        start(d, p)
    elif op == OP_SETUP:
        setup_policy(d, p)
    elif op == OP_DETACH:
        detach_policy(d, p)
    elif op == OP_SWITCH:
        switch_policy(d, p, q)
    else:
        program_submit(d, p, a, b)
    return 0


#: The compiled dispatchers (cached): `enter`, and the small entry points
#: that call no policy.
ENTER = compiled_entry(enter)
DISPATCHERS = {
    "enter": ENTER,
    **{fn.__name__: compiled_entry(fn) for fn in (
        needs_room, push_python_timer, inflight_masks, rehash, set_clock,
    )},
}  # fmt: skip
#: The same functions as INTERPRETED, compiled.
COMPILED = Entries(
    run_epoch=lambda d, p, end_ns: ENTER(d, p, p, OP_RUN, end_ns, 0),
    start=lambda d, p: ENTER(d, p, p, OP_START, 0, 0),
    needs_room=DISPATCHERS["needs_room"],
    push_python_timer=DISPATCHERS["push_python_timer"],
    setup_policy=lambda d, p: ENTER(d, p, p, OP_SETUP, 0, 0),
    detach_policy=lambda d, p: ENTER(d, p, p, OP_DETACH, 0, 0),
    switch_policy=lambda d, old, new: ENTER(d, old, new, OP_SWITCH, 0, 0),
    inflight_masks=DISPATCHERS["inflight_masks"],
    rehash=DISPATCHERS["rehash"],
    set_clock=DISPATCHERS["set_clock"],
    program_submit=lambda d, p, s, k: ENTER(d, p, p, OP_SUBMIT, s, k),
)

#: `launch` as a Python policy calls it.
INTERPRETED_LAUNCH = launch

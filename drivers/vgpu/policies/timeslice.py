"""Time slicing: contexts take turns on the whole GPU (`drivers/vgpu/policies`).

The default way separate processes share an NVIDIA GPU.  One context holds
the GPU for a slice (`slice_ns`, a few hundred microseconds); at the end of
the slice the next context with work takes it, round robin.  A context
that runs out of work gives the GPU up at once, and one that is alone keeps
it.

The device switches contexts at thread-block boundaries: the outgoing
context's resident blocks finish, and no new block of it starts.  So a
kernel is launched one wave at a time (a wave: the blocks the device holds
at once), and the next wave only while its context still holds the GPU.

Waves reach the device in the order of the turns: a wave is ordered by
the instant it is launched, not by when its kernel was enqueued.  A wave
launched at the start of a turn may still wait for the blocks the
previous holder left running (a block can be longer than a slice); the
previous holder's next wave, though its kernel is older, goes after it.
So a kernel that arrives while one other context holds the GPU waits at
most for the rest of that context's slice and one of its blocks (the model
charges no time for the switch itself).
"""

from __future__ import annotations

import numpy as np

from drivers.vgpu.sharing.compiled import (
    D_FULL_MASK,
    D_NOW,
    D_NSTREAMS,
    D_NTPCS,
    K_BPT,
    MAX_STREAMS,
    POLICY_TIMERS,
    ST_INFLIGHT,
    ST_POS,
    Pol,
    compiled_fn,
    kernel_index,
    kernel_pending,
    launch,
    named_state,
    new_state,
    policy_call_at,
    remaining,
    state_of,
    state_values,
)
from drivers.vgpu.sharing.policy import PRIO_NORMAL, SharingPolicy, microseconds


class Timeslice(SharingPolicy):
    name = "timeslice"
    summary = "Time slicing: contexts take turns on the whole GPU."
    PARAMETERS = {"slice_us": microseconds("slice_ns")}

    def __init__(self, slice_ns: int = 500_000) -> None:
        if slice_ns <= 0:
            raise ValueError(f"timeslice: the slice must be positive, got {slice_ns} ns")
        self.slice_ns = slice_ns

    def compiled_setup(self, sim) -> Pol:
        """Each stream's slice is in proportion to its share (its `quota`: a
        VM's vGPU share), or equal when no shares are set.  A stream without
        a share still gets a twentieth of a slice, so it is never starved."""
        self.sim = sim
        quotas = [s.quota for s in sim.streams]
        slices = [self.slice_ns] * len(quotas)
        if any(quotas) and len(set(quotas)) > 1:
            slices = [
                max(self.slice_ns // 20, round(self.slice_ns * q * len(quotas))) for q in quotas
            ]
        return new_state(STATE, 0, owner=-1, slice_ns=slices)

    def compiled_report(self, pol: Pol) -> dict:
        return {"switches": int(state_values(pol, STATE)["switches"]), "slice_ns": self.slice_ns}


# The named state.  The waiting streams are a ring, each stream in it at
# most once: `waiting` is the set of them, as bits.
STATE = named_state(
    owner=np.int64,  # the stream holding the GPU, -1: none
    slice_end_ns=np.int64,
    switches=np.int64,
    epoch=np.int64,  # invalidates the timer of an earlier slice
    wait_head=np.int64,
    wait_len=np.int64,
    waiting=np.int64,
    slice_ns=(np.int64, MAX_STREAMS),  # each stream's slice
    ring=(np.int64, MAX_STREAMS),
)
state = state_of(STATE)
SLICE_OVER = POLICY_TIMERS


@compiled_fn
def _wait(d, p, s):
    """`waiting.append(s)` unless it is there."""
    st = state(p)
    if st["waiting"] >> s & 1:
        return
    n = d.sc[D_NSTREAMS]
    st["ring"][(st["wait_head"] + st["wait_len"]) % n] = s
    st["wait_len"] += 1
    st["waiting"] |= 1 << s


@compiled_fn
def _popleft(d, p):
    st = state(p)
    n = d.sc[D_NSTREAMS]
    s = st["ring"][st["wait_head"]]
    st["wait_head"] = (st["wait_head"] + 1) % n
    st["wait_len"] -= 1
    st["waiting"] &= ~(1 << s)
    return s


@compiled_fn
def compiled_kernel_ready(d, p, s):
    owner = state(p)["owner"]
    if owner < 0:
        _give(d, p, s)
    elif s == owner:
        _continue(d, p, s)
    else:
        _wait(d, p, s)


@compiled_fn
def compiled_atom_done(d, p, s, atom, kernel_done):
    if (
        s == state(p)["owner"]
        and not kernel_done
        and d.st[ST_INFLIGHT, s] == 0
        and kernel_pending(d, s)
    ):
        _continue(d, p, s)


@compiled_fn
def compiled_stream_idle(d, p, s):
    if s == state(p)["owner"]:
        _next(d, p)


@compiled_fn
def compiled_timer(d, p, kind, arg):
    if kind == SLICE_OVER and arg == state(p)["epoch"]:
        _next(d, p)


@compiled_fn
def _continue(d, p, s):
    if d.sc[D_NOW] >= state(p)["slice_end_ns"]:
        _wait(d, p, s)
        _next(d, p)
        return
    _launch_wave(d, s)


@compiled_fn
def _launch_wave(d, s):
    wave = d.sc[D_NTPCS] * d.kern[K_BPT, kernel_index(d, s)]
    blocks = min(wave, remaining(d, s))
    launch(d, s, blocks, d.sc[D_FULL_MASK], PRIO_NORMAL, 0, -1)


@compiled_fn
def _new_slice(d, p, s):
    st = state(p)
    st["epoch"] += 1
    st["slice_end_ns"] = d.sc[D_NOW] + st["slice_ns"][s]
    policy_call_at(d, st["slice_end_ns"], SLICE_OVER, st["epoch"])


@compiled_fn
def _give(d, p, s):
    st = state(p)
    st["owner"] = s
    st["switches"] += 1
    _new_slice(d, p, s)
    if kernel_pending(d, s) and d.st[ST_INFLIGHT, s] == 0:
        _launch_wave(d, s)


@compiled_fn
def _busy(d, s):
    return kernel_pending(d, s) or d.st[ST_INFLIGHT, s] > 0


@compiled_fn
def _next(d, p):
    st = state(p)
    s = st["owner"]
    while st["wait_len"]:
        nxt = _popleft(d, p)
        if nxt == s:
            continue
        if _busy(d, nxt):
            if s >= 0 and _busy(d, s):
                _wait(d, p, s)
            _give(d, p, nxt)
            return
    # Nobody else wants the GPU: the owner keeps it if it has work.
    if s >= 0 and (_busy(d, s) or d.st[ST_POS, s] >= 0):
        _new_slice(d, p, s)
        if kernel_pending(d, s) and d.st[ST_INFLIGHT, s] == 0:
            _launch_wave(d, s)
    else:
        st["owner"] = -1

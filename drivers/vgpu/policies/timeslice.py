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

from collections import deque

import numpy as np

from drivers.vgpu.policies.base import PRIO_NORMAL, SharingPolicy, Stream, microseconds
from drivers.vgpu.policies.compiled import (
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


class Timeslice(SharingPolicy):
    name = "timeslice"
    summary = "Time slicing: contexts take turns on the whole GPU."
    PARAMETERS = {"slice_us": microseconds("slice_ns")}

    def __init__(self, slice_ns: int = 500_000) -> None:
        if slice_ns <= 0:
            raise ValueError(f"timeslice: the slice must be positive, got {slice_ns} ns")
        self.slice_ns = slice_ns

    def setup(self) -> None:
        self.owner: Stream | None = None  # the stream holding the GPU
        self.waiting: deque = deque()  # streams with a kernel to run, in turn order
        self.slice_end_ns = 0
        self.switches = 0
        self._epoch = 0  # invalidates the timer of an earlier slice

    def kernel_ready(self, s) -> None:
        if self.owner is None:
            self._give(s)
        elif s is self.owner:
            self._continue(s)
        elif s not in self.waiting:
            self.waiting.append(s)

    def atom_done(self, s: Stream, atom: int, kernel_done: bool) -> None:
        if s is self.owner and not kernel_done and s.inflight == 0 and s.kernel_pending:
            self._continue(s)

    def _continue(self, s) -> None:
        """The owner has a wave to launch; a slice that ends now ends first."""
        if self.sim.now_ns >= self.slice_end_ns:
            if s not in self.waiting:
                self.waiting.append(s)
            self._next()
            return
        self._launch_wave(s)

    def stream_idle(self, s) -> None:
        if s is self.owner:
            self._next()

    def _launch_wave(self, s) -> None:
        wave = self.sim.n_tpcs * s.desc.blocks_per_tpc
        self.sim.launch(s, min(wave, s.remaining), self.sim.full_mask, PRIO_NORMAL)

    def _give(self, s) -> None:
        """Start a slice for `s`."""
        self.owner = s
        self.switches += 1
        self._epoch += 1
        self.slice_end_ns = self.sim.now_ns + self._slice_ns(s)
        self.call_at(self.slice_end_ns, self._slice_over, self._epoch)
        if s.kernel_pending and s.inflight == 0:
            self._launch_wave(s)

    def _slice_ns(self, s) -> int:
        """A slice in proportion to the stream's share (its `quota`: a VM's
        vGPU share); equal slices when no shares are set.  A stream without
        a share still gets a twentieth of a slice, so it is never starved."""
        quotas = [t.quota for t in self.sim.streams]
        if not any(quotas) or len(set(quotas)) == 1:
            return self.slice_ns
        return max(self.slice_ns // 20, round(self.slice_ns * s.quota * len(quotas)))

    def _slice_over(self, epoch: int) -> None:
        if epoch != self._epoch:
            return
        self._next()

    def _next(self) -> None:
        """The slice is over or its owner ran dry: hand the GPU to the next in turn."""
        s = self.owner
        while self.waiting:
            nxt = self.waiting.popleft()
            if nxt is s:
                continue
            if nxt.kernel_pending or nxt.inflight:
                if s is not None and (s.kernel_pending or s.inflight) and s not in self.waiting:
                    self.waiting.append(s)
                self._give(nxt)
                return
        # Nobody else wants the GPU: the owner keeps it if it has work.
        if s is not None and (s.kernel_pending or s.inflight or s.active):
            self._epoch += 1
            self.slice_end_ns = self.sim.now_ns + self._slice_ns(s)
            self.call_at(self.slice_end_ns, self._slice_over, self._epoch)
            if s.kernel_pending and s.inflight == 0:
                self._launch_wave(s)
        else:
            self.owner = None

    def detach(self) -> None:
        self.waiting.clear()
        self.owner = None

    def report(self) -> dict:
        return {"switches": self.switches, "slice_ns": self.slice_ns}

    # -- the compiled form ---------------------------------------------------

    def compiled_setup(self, sim) -> Pol:
        self.sim = sim
        slices = [self._slice_ns(s) for s in sim.streams]
        return new_state(STATE, 0, owner=-1, slice_ns=slices)

    def compiled_report(self, pol: Pol) -> dict:
        self.switches = int(state_values(pol, STATE)["switches"])
        return self.report()


# The compiled form's named state.  The waiting streams are a ring, each
# stream in it at most once: `waiting` is the set of them, as bits.
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

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
"""

from __future__ import annotations

from collections import deque

from drivers.vgpu.policies.base import PRIO_NORMAL, SharingPolicy, Stream, microseconds


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
        now = self.sim.now_ns
        self.sim.launch(
            s, min(wave, s.remaining), self.sim.full_mask, PRIO_NORMAL, order=s.host_order(now)
        )

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

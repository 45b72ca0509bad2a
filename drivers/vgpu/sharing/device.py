"""The shared device: the virtual GPU as a sharing policy sees it (`drivers/vgpu/sharing`).

Two things put a sharing policy in charge of the vGPU: the experiments'
`Simulation` (sim.py), whose streams are tenants replaying kernel traces,
and the booted vGPU driver (`drivers/vgpu/scheduler.py`), whose streams are
programs' CUDA-like streams.  Both are a `SharedDevice`: an engine, a list
of `DeviceStream`s that each run one kernel at a time, and the policy, which
launches each stream's current kernel whole or in atoms, on a TPC mask, at
a priority, and sets timers.  The loop is the same for both::

    events = gpu.advance(next timer, or the end)
    completions -> policy.atom_done; a finished kernel -> kernel_finished(s)
    no completions -> run the timers due now

A stream's kernel reaches the policy (`kernel_ready`) through `enqueue`, when
the host's launch of it has arrived and the previous one is done.

The device holds what scheduling needs, and no more: each atom's owner and
launch time while it is in flight.  What a run leaves for people to read
(the trace window's atoms, the launch and clock logs, per-atom figures) is
an attached `Recorder`'s (recorder.py); the booted driver attaches none, so
its memory is bounded by the work in flight, run as long as it may.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar, cast

from drivers.vgpu.api import Completion
from drivers.vgpu.engine import Engine
from drivers.vgpu.policies.base import SharingPolicy
from drivers.vgpu.presets import GpuSpec, get_preset
from drivers.vgpu.sharing.recorder import Recorder, TraceAtom
from drivers.vgpu.work import KernelDesc

__all__ = ["DeviceStream", "Recorder", "SharedDevice", "TraceAtom", "kernel_profile", "kernel_sms"]


def kernel_sms(kernel: KernelDesc, spec: GpuSpec) -> int:
    """SMs the kernel fills alone: its blocks over the blocks one SM holds (Orion's SM_usage)."""
    return -(-kernel.grid_blocks * spec.sms_per_tpc // kernel.blocks_per_tpc)


def kernel_profile(kernel: KernelDesc) -> int:
    """Orion's profile: 1 compute-bound, 0 memory-bound, -1 unknown."""
    m = kernel.mem_fraction
    return 1 if m < 0.5 else 0 if m > 0.5 else -1


class StreamProgress:
    """What a stream's current kernel implies, from its `pos`, `grid`,
    `launched` and `host_ns`: shared by the driver's streams (plain
    attributes) and the simulation's (views of the loop's tables)."""

    pos: int
    grid: int
    launched: int
    host_ns: int

    def host_order(self, now_ns: int) -> int:
        """When the host enqueued the current kernel (not after now)."""
        return min(self.host_ns, now_ns)

    @property
    def active(self) -> bool:
        """The stream has work in progress (a request, or kernels queued)."""
        return self.pos >= 0

    @property
    def remaining(self) -> int:
        """Blocks of the current kernel not launched yet."""
        return self.grid - self.launched

    @property
    def kernel_pending(self) -> bool:
        """The current kernel has blocks the policy has not launched."""
        return self.pos >= 0 and self.launched < self.grid


class DeviceStream(StreamProgress):
    """One stream on the shared device: its current kernel and what a policy knows of it."""

    def __init__(self, index: int, name: str, ctx: int, *, hp: bool, quota: float) -> None:
        self.index = index  # place in the device's `streams`
        self.name = name
        self.ctx = ctx
        #: High priority (latency-critical) rather than best effort.
        self.hp = hp
        #: Share of the device's TPCs: MIG slices, the MPS thread percentage,
        #: the LithOS TPC quota (0: none set).
        self.quota = quota
        #: Isolated time of one whole request on the full GPU (0: unknown).
        self.request_iso_ns = 0
        # The current kernel.
        self.pos = -1  # its index in the request (the sim) or the stream (the driver)
        self.desc: KernelDesc | None = None  # None: no kernel on the device
        self.kernel_id = -1
        self.grid = 0
        self.launched = 0  # blocks of the current kernel launched so far
        self.inflight = 0  # atoms of the current kernel not yet complete
        self.ready_ns = 0  # when the current kernel became ready
        self.host_ns = 0  # when the host enqueued the current kernel
        self.inflight_masks: dict[int, int] = {}  # atom id -> mask, for every atom in flight
        self.inflight_priorities: dict[int, int] = {}  # atom id -> priority, the same atoms
        # The profile a policy may know of the current kernel (REEF and Orion
        # schedule on it): its isolated time, Orion's SM_usage and profile.
        self.kernel_iso_ns = 0
        self.kernel_sms = 0
        self.kernel_profile = -1
        #: How policies key what they learn about the current kernel.
        self.kernel_key: Hashable = None

    @property
    def has_kernel(self) -> bool:
        """The GPU has the stream's current kernel: its host launch has arrived."""
        return self.desc is not None


S = TypeVar("S", bound=DeviceStream)


class SharedDevice(Generic[S]):
    """The virtual GPU under a sharing policy: streams, launches, timers and the clock."""

    def __init__(
        self,
        spec: GpuSpec | str,
        policy: SharingPolicy | None,
        *,
        record_blocks: bool = False,
        trace_window_ns: tuple[int, int] | None = None,
        engine: Engine | None = None,
        engine_mode: str = "block",
        record: bool = True,
    ) -> None:
        """`record_blocks` keeps the engine's block log (for tests);
        `trace_window_ns`: record the atoms launched within it (for a trace);
        `engine`: drive this engine (it must dispatch in launch order);
        `engine_mode`: else a new engine's, "block" (block-exact, the
        reference model's twin) or "wave" (engine.py);
        `record`: attach a `Recorder` (of `trace_window_ns`); False: record
        nothing, for an owner that runs for as long as the machine does."""
        self.spec = spec if isinstance(spec, GpuSpec) else get_preset(spec)
        self.gpu = engine or Engine(
            self.spec, dispatch_order="launch", record_blocks=record_blocks, mode=engine_mode
        )
        self.n_tpcs = self.spec.n_tpcs
        self.full_mask = self.spec.all_tpcs_mask
        self.streams: list[S] = []
        #: The policy in charge: None only until a run or `follow_advisors` sets one.
        self.policy = cast(SharingPolicy, policy)
        #: Per atom in flight (by atom id): its stream, and when it was launched
        #: (a dict; policies only index it, though their `Device` says a list).
        self.atom_owner: dict[int, S] = {}
        self.atom_launch_ns: Any = {}
        #: What the run records for afterwards (None: nothing).
        self.recorder: Recorder | None = Recorder(trace_window_ns) if record else None
        self._ctx_order: dict[int, int] = {}  # dispatch order of each context's last launch
        self._timers: list[tuple[int, int, Any, Callable, tuple]] = []
        self._seq = 0
        self.running = False
        #: Virtual time, as the engine's (it moves only inside `advance`).
        self.now_ns = 0

    # -- what the recorder keeps (nothing without one) -----------------------

    @property
    def trace_window_ns(self) -> tuple[int, int] | None:
        return None if self.recorder is None else self.recorder.trace_window_ns

    @property
    def trace_atoms(self) -> list[TraceAtom]:
        return [] if self.recorder is None else self.recorder.trace_atoms

    @property
    def launch_log(self) -> list[tuple[int, ...]]:
        return [] if self.recorder is None else self.recorder.launch_log

    @property
    def clock_log(self) -> list[tuple[int, int]]:
        return [] if self.recorder is None else self.recorder.clock_log

    @property
    def record_launches(self) -> bool:
        """Whether the launch log is kept (`Recorder.record_launches`)."""
        return self.recorder is not None and self.recorder.record_launches

    @record_launches.setter
    def record_launches(self, on: bool) -> None:
        if self.recorder is None:
            raise ValueError("this device records nothing: it has no recorder")
        self.recorder.record_launches = on

    # -- for policies --------------------------------------------------------

    def call_at(self, t_ns: int, fn: Callable, *args: Any, owner: Any = None) -> None:
        """Run ``fn(*args)`` at virtual time `t_ns` (not before now).

        Timers whose `owner` is a policy no longer in charge are dropped, so a
        policy switched out at run time leaves nothing behind.
        """
        self._seq += 1
        heapq.heappush(self._timers, (max(t_ns, self.now_ns), self._seq, owner, fn, args))

    def launch(
        self,
        s: S,
        blocks: int,
        mask: int,
        priority: int,
        *,
        stolen: bool = False,
        order: int | None = None,
    ) -> int:
        """Launch the next `blocks` blocks of `s`'s current kernel on `mask`; return the atom id.

        `order` is the atom's place among equal priorities (default: now).
        A context's work queue is first in, first out: an atom never goes
        ahead of one its context launched before, from any of its streams.
        """
        begin = s.launched
        end = begin + blocks
        last = self._ctx_order.get(s.ctx, 0)
        if order is None or order < last:
            order = max(last, self.now_ns if order is None else order)
        self._ctx_order[s.ctx] = order
        atom = self.gpu.launch(s.ctx, s.kernel_id, begin, end, mask, priority, order)
        s.launched = end
        s.inflight += 1
        s.inflight_masks[atom] = mask
        s.inflight_priorities[atom] = priority
        self.atom_owner[atom] = s
        self.atom_launch_ns[atom] = self.now_ns
        if self.recorder is not None:
            self.recorder.launched(atom, s, self.now_ns, begin, end, mask, priority, order, stolen)
        return atom

    def set_clock(self, clock_mhz: int) -> int:
        """Request a clock; returns when it takes effect."""
        effective = self.gpu.set_clock(clock_mhz)
        if self.recorder is not None:
            self.recorder.clock_set(effective, clock_mhz)
        return effective

    def set_policy(self, policy: SharingPolicy) -> None:
        """Switch policies while running: held kernels are offered to the new one.

        If the new policy's setup raises, the old one stays in charge."""
        old = self.policy
        policy.attach(self)
        old.detach()
        self.policy = policy
        for s in self.streams:
            if s.kernel_pending:
                policy.kernel_ready(s)

    # -- the loop ------------------------------------------------------------

    def advance(self, end_ns: int) -> None:
        """Run the device, its completions and the policy's timers up to `end_ns`."""
        gpu = self.gpu
        timers = self._timers
        while True:
            t_next = timers[0][0] if timers and timers[0][0] < end_ns else end_ns
            events = gpu.advance(t_next)
            if events:
                self.now_ns = events[0].time_ns
                self.deliver(events)
                continue
            self.now_ns = t_next  # no completion: the engine stopped at t_next
            if t_next >= end_ns:
                return
            self.run_timers()

    def deliver(self, completions: list[Completion]) -> None:
        """Hand each completion to its stream's policy (atoms launched beside
        the policy have none), then release the atoms: their ids may name
        new atoms from now on."""
        owners = self.atom_owner
        for c in completions:
            s = owners.get(c.atom_id)
            if s is not None:
                self.complete(s, c.atom_id, c.kernel_done)
        self.gpu.release_atoms([c.atom_id for c in completions])

    def run_timers(self) -> None:
        """Run the timers due now."""
        timers = self._timers
        now = self.now_ns
        while timers and timers[0][0] <= now:
            _, _, owner, fn, args = heapq.heappop(timers)
            if owner is None or owner is self.policy:
                fn(*args)

    def enqueue(self, s: S, desc: KernelDesc, kernel_id: int | None = None) -> None:
        """`s`'s next kernel reached the GPU: offer it to the policy.

        `kernel_id`: the engine's id, if the kernel was added already."""
        s.desc = desc
        s.kernel_id = self.gpu.add_kernel(desc) if kernel_id is None else kernel_id
        s.grid = desc.grid_blocks
        s.launched = 0
        s.ready_ns = self.now_ns
        self.policy.kernel_ready(s)

    def complete(self, s: S, atom: int, kernel_done: bool) -> None:
        """An atom of `s` completed: tell the policy, and `kernel_finished` if it was the last."""
        s.inflight -= 1
        mask = s.inflight_masks.pop(atom)
        del s.inflight_priorities[atom]
        self.atom_completed(s, atom)
        if self.recorder is not None:
            self.recorder.completed(atom, s, self.now_ns, mask)
        self.policy.atom_done(s, atom, kernel_done)
        del self.atom_owner[atom], self.atom_launch_ns[atom]
        if kernel_done:
            self.kernel_finished(s)

    # -- for the owner of the device (the simulation, the driver) -------------

    def atom_completed(self, s: S, atom: int) -> None:
        """Account for a completed atom (before the policy hears of it)."""

    def kernel_finished(self, s: S) -> None:
        """`s`'s current kernel is done: start its next one, or let it go idle."""

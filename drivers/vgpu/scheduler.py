"""The driver's stream scheduler: programs' kernels under a sharing policy (`drivers/vgpu`).

The vGPU driver server (server.py) hands every kernel a program launches to
a `StreamScheduler`.  Each (context, stream) pair is a `ProgramStream`, a
stream of the same `SharedDevice` that the experiments simulate on, so the
eight sharing policies of `drivers/vgpu/policies` run here unchanged: the
one the attached MLaaS GPU advisor names (`sharing_policy`, with its insmod
parameters as the parameter set), or, with none, `Advised`: MPS-like whole
kernels on the TPCs the advisor's `tpc_allocation` gives each context (the
whole device without one), at the priority the program asked for.

What the policies know of a program's stream:

* it is high priority when its current kernel's `LaunchSpec.priority` is
  above 0, best effort otherwise;
* every stream gets an equal share of the TPCs (its MIG slices, MPS thread
  percentage, LithOS quota or time slice), unless its context was given a
  share (`set_share`: a VM's vGPU share): then the context's streams split
  that share, and the contexts without one split what the shares leave;
* kernels are keyed by context, stream and kernel name (LithOS's predictor,
  right-sizer and governor learn per key);
* a program's kernel has no request profile, so Orion's duration cap is its
  fixed default.

A new stream, a destroyed context or a stream changing priority class
re-attaches a fresh copy of the policy over the new set of streams (LithOS
relearns its predictions).

The scheduler is the only one that runs the driver's engine (`advance`,
`catch_up`, `run_until_done`): kernel-space inference's batches come to it
through the driver (server.py's `InferencePort`) as kernels of the
inference context's stream, scheduled by the policy in charge like any
program's, and every completion and timer is handled in order.

Memory.  The scheduler records nothing (no `Recorder`): it holds the atoms
in flight, the streams of live contexts and their queued kernels.  Each
batch of completions is released to the engine once handled, and
`on_kernel_done` lets the driver collect and release a finished kernel, so
a driver whose engine keeps no history (`keep_history=False`) runs in
bounded memory.  A policy that cannot serve the streams (MIG
with more than seven) is refused: the advisor that named it is ejected as
invalid and `Advised` takes over.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, cast

from drivers.vgpu.errors import GpuError, InvalidArgument
from drivers.vgpu.policies import make_policy
from drivers.vgpu.policies.base import SharingPolicy, Stream
from drivers.vgpu.sharing.advised import policy_kwargs
from drivers.vgpu.sharing.device import DeviceStream, SharedDevice, kernel_profile, kernel_sms
from drivers.vgpu.work import KernelDesc


class ProgramStream(DeviceStream):
    """One stream of a program's context, with the kernels queued behind its current one."""

    def __init__(self, index: int, ctx: int, stream: int) -> None:
        super().__init__(index, f"ctx {ctx} stream {stream}", ctx, hp=False, quota=0.0)
        self.stream = stream
        #: Kernels launched but not yet on the device: (kernel id, desc, spec, launch time).
        self.queue: deque[tuple[int, KernelDesc, Any, int]] = deque()
        self.spec: Any = None  # the current kernel's LaunchSpec
        self.count = 0  # kernels taken onto the device so far

    @property
    def idle(self) -> bool:
        return not self.active and not self.queue


class Advised(SharingPolicy):
    """The driver's default: whole kernels first launched first served, on
    the program's own mask, else the GPU advisor's allocation for its context."""

    name = "mps"

    def __init__(self, allocation: Callable[[int], int | None]) -> None:
        self.allocation = allocation

    @property
    def label(self) -> str:
        return "default"

    def mask(self, s: Stream) -> int:
        program = cast(ProgramStream, s)  # the driver's streams are programs'
        if program.spec.mask is not None:
            return program.spec.mask
        mask = self.allocation(program.ctx)
        return self.sim.full_mask if mask is None else mask

    def priority(self, s: Stream) -> int:
        return cast(ProgramStream, s).spec.priority


class StreamScheduler(SharedDevice[ProgramStream]):
    """Programs' streams on the driver's engine, under the selected policy."""

    def __init__(self, engine: Any, allocation: Callable[[int], int | None]) -> None:
        self._allocation = allocation
        super().__init__(engine.spec, Advised(allocation), engine=engine, record=False)
        self.by_stream: dict[tuple[int, int], ProgramStream] = {}
        #: The policy in charge: (name, keyword arguments), None for `Advised`.
        self.selected: tuple[str, dict[str, Any]] | None = None
        #: Kernels each context has completed, and when its last one did.
        self.done: dict[int, int] = {}
        self.last_done_ns: dict[int, int] = {}
        #: Called with (context, kernel id) when a kernel finished, once its
        #: policy has heard of it (the driver reads its time and releases it).
        self.on_kernel_done: Callable[[int, int], None] | None = None
        #: Why the selected policy was last dropped for `Advised` (None: it was not).
        self.refused: str | None = None
        #: Contexts' shares of the device (fractions; a VM's `gpu_share`).
        self.shares: dict[int, float] = {}
        self.policy.attach(self)
        self.running = True

    # -- the policy --------------------------------------------------------------

    def _fresh(self) -> SharingPolicy:
        if self.selected is None:
            return Advised(self._allocation)
        name, kwargs = self.selected
        return make_policy(name, **kwargs)

    def select(self, name: str | None, params: dict[str, Any] | None = None) -> None:
        """Put policy `name` with module parameters `params` in charge (None: `Advised`).

        Raises InvalidArgument, and keeps the policy in charge, if it cannot
        serve the current streams or its parameters are bad.
        """
        previous = self.selected
        self.selected = None if name is None else (name, policy_kwargs(name, params or {}))
        try:
            self.set_policy(self._fresh())
        except (InvalidArgument, ValueError) as exc:
            self.selected = previous
            raise InvalidArgument(str(exc)) from None

    def _reshare(self) -> None:
        """The set of streams changed: equal shares, and a fresh policy over them.

        If the selected policy cannot serve them, `Advised` takes over and
        `refused` names the policy, for the driver to eject its advisor."""
        for i, s in enumerate(self.streams):
            s.index = i
        for s, quota in zip(self.streams, self._quotas(), strict=True):
            s.quota = quota
        try:
            self.set_policy(self._fresh())
        except (InvalidArgument, ValueError) as exc:
            if self.selected is None:
                raise
            self.refused = f"policy {self.selected[0]!r}: {exc}"
            self.selected = None
            self.set_policy(self._fresh())

    def _quotas(self) -> list[float]:
        """Each stream's share: equal without shares; else a context's share
        split among its streams, and the rest among the unshared contexts' streams."""
        n = len(self.streams)
        if not self.shares or not n:
            return [1.0 / n] * n if n else []
        streams_of: dict[int, int] = {}
        for s in self.streams:
            streams_of[s.ctx] = streams_of.get(s.ctx, 0) + 1
        shared = sum(self.shares.get(ctx, 0.0) for ctx in streams_of)
        unshared = sum(k for ctx, k in streams_of.items() if ctx not in self.shares)
        rest = max(0.0, 1.0 - shared)
        return [
            self.shares[s.ctx] / streams_of[s.ctx] if s.ctx in self.shares else rest / unshared
            for s in self.streams
        ]

    def set_share(self, ctx: int, share: float | None) -> None:
        """Give context `ctx` a share of the device (None: none, an equal part)."""
        if share is None:
            self.shares.pop(ctx, None)
        else:
            self.shares[ctx] = share
        if any(s.ctx == ctx for s in self.streams):
            self._reshare()

    # -- programs' kernels -----------------------------------------------------

    def submit(self, ctx: int, stream: int, kernel_id: int, desc: KernelDesc, spec: Any) -> None:
        """Queue a launched kernel on its stream; it runs after the stream's earlier ones."""
        s = self.by_stream.get((ctx, stream))
        grown = s is None
        if s is None:
            s = self.by_stream[(ctx, stream)] = ProgramStream(len(self.streams), ctx, stream)
            self.streams.append(s)
        s.queue.append((kernel_id, desc, spec, self.now_ns))
        if grown:
            self._reshare()
        if not s.active:
            self._next(s)

    def _next(self, s: ProgramStream) -> None:
        kernel_id, desc, spec, launched_ns = s.queue.popleft()
        hp = spec.priority > 0
        s.spec = spec
        s.pos = s.count
        s.count += 1
        s.host_ns = launched_ns
        s.kernel_iso_ns = desc.isolated_duration_ns(self.n_tpcs)
        s.kernel_sms = kernel_sms(desc, self.spec)
        s.kernel_profile = kernel_profile(desc)
        s.kernel_key = (s.ctx, s.stream, desc.name)
        if hp != s.hp:
            s.hp = hp
            self._reshare()
        self.enqueue(s, desc, kernel_id)

    def kernel_finished(self, s: ProgramStream) -> None:
        self.done[s.ctx] = self.done.get(s.ctx, 0) + 1
        self.last_done_ns[s.ctx] = self.now_ns
        if self.on_kernel_done is not None:
            self.on_kernel_done(s.ctx, s.kernel_id)
        if s.queue:
            self._next(s)
            return
        s.pos = -1
        s.desc = None
        s.grid = s.launched = 0
        self.policy.stream_idle(s)

    def remove_context(self, ctx: int) -> None:
        """Forget an idle context's streams."""
        self.shares.pop(ctx, None)
        self.done.pop(ctx, None)  # a later context may get the same id (a restored VM's)
        self.last_done_ns.pop(ctx, None)
        gone = [key for key in self.by_stream if key[0] == ctx]
        if not gone:
            return
        for key in gone:
            s = self.by_stream.pop(key)
            self.streams.remove(s)
        self._reshare()

    # -- state -------------------------------------------------------------------

    def context_idle(self, ctx: int) -> bool:
        return all(s.idle for key, s in self.by_stream.items() if key[0] == ctx)

    def queued(self, ctx: int) -> int:
        """Kernels of `ctx` launched and not yet complete."""
        return sum(len(s.queue) + s.active for key, s in self.by_stream.items() if key[0] == ctx)

    def tpcs_in_use(self, ctx: int) -> int:
        """TPCs the masks of `ctx`'s atoms in flight cover."""
        union = 0
        for key, s in self.by_stream.items():
            if key[0] == ctx:
                for mask in s.inflight_masks.values():
                    union |= mask
        return union.bit_count()

    def next_event_ns(self) -> int | None:
        """The earliest instant anything can change without a new request: a
        block group ending, a clock change, or one of the policy's timers."""
        times = [self._timers[0][0]] if self._timers else []
        device = self.gpu.next_event_ns()
        if device is not None:
            times.append(device)
        return min(times) if times else None

    @property
    def busy(self) -> bool:
        return any(s.active for s in self.streams)

    # -- time ------------------------------------------------------------------

    def catch_up(self, now_ns: int) -> None:
        """Bring the device to the kernel's time, with the policy's timers on the way.

        The device may be ahead of the kernel's time (`run_until_done` ran it
        to an inference batch's completion): then it stays where it is."""
        self.advance(max(now_ns, self.now_ns))

    def run_until_done(self, kernel_id: int) -> int:
        """Run the device, its completions and the policy's timers in order,
        as `advance` does, until kernel `kernel_id` (submitted) is done; return
        when it completed.  The device then stands at that instant, which may
        be ahead of the kernel's time.

        Raises GpuError if nothing is left that could ever finish it."""
        gpu, timers = self.gpu, self._timers
        while (done_ns := gpu.kernel_done_ns(kernel_id)) is None:
            t_next = timers[0][0] if timers else None
            events = gpu.advance(t_next)  # None: to the next completion
            if events:
                self.now_ns = events[0].time_ns
                self.deliver(events)
                continue
            if t_next is None:
                raise GpuError(f"kernel {kernel_id} cannot finish: the device and policy are idle")
            self.now_ns = t_next  # no completion: the engine stopped at the timer
            self.run_timers()
        return done_ns

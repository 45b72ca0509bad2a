"""The driver's stream scheduler: programs' kernels under a sharing policy (`drivers/vgpu`).

The vGPU driver server (server.py) hands every kernel a program launches to
a `StreamScheduler`.  Each (context, stream) pair is a `ProgramStream`, a
stream of the one loop that the experiments simulate in (here on a
`ProgramRun`: sharing/program_run.py), so the sharing policies of
`drivers/vgpu/policies` run here as they do there, compiled: the
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
relearns its predictions).  A stream's class is that of the kernel last
launched on it: it changes when the program launches, not when that kernel
reaches the device.  `Advised` takes each context's TPC allocation from the
advisor when its kernel is launched.

The scheduler is the only one that runs the driver's engine (`advance`,
`catch_up`, `run_until_done`): kernel-space inference's batches come to it
through the driver (server.py's `InferencePort`) as kernels of the
inference context's stream, scheduled by the policy in charge like any
program's, and every completion and timer is handled in order.

Memory.  The scheduler records nothing: the loop's tables hold the atoms
in flight (their ids recycled), the streams of live contexts and their
queued kernels (their columns recycled).  `on_kernel_done` lets the driver
collect and release a finished kernel, so a driver whose engine keeps no
history (`keep_history=False`) runs in bounded memory.  A policy that cannot serve the streams (MIG
with more than seven) is refused: the advisor that named it is ejected as
invalid and `Advised` takes over.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from drivers.vgpu.errors import GpuError, InvalidArgument
from drivers.vgpu.policies import make_policy
from drivers.vgpu.policies.default import Advised
from drivers.vgpu.sharing.advised import policy_kwargs
from drivers.vgpu.sharing.compiled import (
    AT_LAUNCH_NS,
    D_NOW,
    K_ISO,
    K_PROFILE,
    K_SMS,
    ST_HAS_KERNEL,
    ST_KCOL,
)
from drivers.vgpu.sharing.policy import SharingPolicy
from drivers.vgpu.sharing.program_run import KERNEL_SLOTS, ProgramRun, slot_of_name
from drivers.vgpu.sharing.stream import LoopStream
from drivers.vgpu.work import KernelDesc

#: How far `run_until_done` runs the device between checks that it can still finish.
_STEP_NS = 1_000_000_000


class ProgramStream(LoopStream):
    """One stream of a program's context: a view of its column in the loop's tables."""

    kernel_slots = KERNEL_SLOTS

    def __init__(self, scheduler: StreamScheduler, ctx: int, stream: int, hp: bool) -> None:
        self._scheduler = scheduler
        self.index = -1  # its column, once the loop has it (`ProgramRun.set_streams`)
        self.name = f"ctx {ctx} stream {stream}"
        self.ctx = ctx
        self.stream = stream
        self.hp = hp
        self.quota = 0.0
        self.request_iso_ns = 0
        self.loop: ProgramRun | None = None
        #: Kernels launched on it and not yet complete (the current one included).
        self.pending = 0
        self._slots: dict[str, int] = {}

    def slot_of(self, name: str) -> int:
        return slot_of_name(self._slots, name)

    def _kernel_row(self, row: int) -> int:
        assert self.loop is not None
        return int(self.loop.dev.kern[row, self._row(ST_KCOL)])

    @property
    def idle(self) -> bool:
        return self.pending == 0

    # -- the `Stream` protocol (the rest is `LoopStream`'s) ---------------------

    @property
    def desc(self) -> KernelDesc | None:
        if not self._row(ST_HAS_KERNEL):
            return None
        return self._scheduler.kernel_at(self._row(ST_KCOL))

    @property
    def kernel_iso_ns(self) -> int:
        return self._kernel_row(K_ISO)

    @property
    def kernel_sms(self) -> int:
        return self._kernel_row(K_SMS)

    @property
    def kernel_profile(self) -> int:
        return self._kernel_row(K_PROFILE)

    @property
    def kernel_key(self) -> Any:
        desc = self.desc
        return (self.ctx, self.stream, None if desc is None else desc.name)


class StreamScheduler:
    """Programs' streams on the driver's engine, under the selected policy, in the one loop."""

    use_compiled = True

    def __init__(self, engine: Any, allocation: Callable[[int], int | None]) -> None:
        self.gpu = engine
        self.spec = engine.spec
        self.n_tpcs = self.spec.n_tpcs
        self.full_mask = self.spec.all_tpcs_mask
        self._allocation = allocation
        self.streams: list[ProgramStream] = []
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
        #: Called as soon as `refused` is set (the driver ejects the advisor
        #: that named the policy before the next kernel asks it for a mask).
        self.on_refused: Callable[[], None] | None = None
        #: Contexts' shares of the device (fractions; a VM's `gpu_share`).
        self.shares: dict[int, float] = {}
        #: The kernels launched and not yet finished, by their column in the
        #: loop's kernel table: (stream, engine kernel id, descriptor, LaunchSpec).
        self._kernels: dict[int, tuple[ProgramStream, int, KernelDesc, Any]] = {}
        self._column: dict[int, int] = {}  # engine kernel id -> column
        self.policy: SharingPolicy = Advised()
        self.loop: ProgramRun = ProgramRun(self, self.policy)
        self.running = True

    # -- the `Device` a policy is in charge of ------------------------------------

    @property
    def now_ns(self) -> int:
        return int(self.loop.dev.sc[D_NOW])

    def call_at(self, t_ns: int, fn: Callable, *args: Any, owner: Any = None) -> None:
        self.loop.call_at(t_ns, fn, args, owner)

    def launch(
        self, s: ProgramStream, blocks: int, mask: int, priority: int, *,
        stolen: bool = False, order: int | None = None,
    ) -> int:  # fmt: skip
        return self.loop.launch(s.index, blocks, mask, priority, stolen, order)

    @property
    def atom_launch_ns(self) -> Any:
        return self.loop.dev.atoms[AT_LAUNCH_NS]

    def set_clock(self, clock_mhz: int) -> int:
        """Request a clock (a policy's, or the power advisor's); returns when it takes effect."""
        return self.loop.set_clock(clock_mhz)

    def kernel_at(self, column: int) -> KernelDesc:
        return self._kernels[column][2]

    # -- the policy --------------------------------------------------------------

    def _fresh(self) -> SharingPolicy:
        if self.selected is None:
            return Advised()
        name, kwargs = self.selected
        return make_policy(name, **kwargs)

    def _put_in_charge(self, policy: SharingPolicy) -> None:
        self.loop.switch(policy)
        self.policy = policy

    def select(self, name: str | None, params: dict[str, Any] | None = None) -> None:
        """Put policy `name` with module parameters `params` in charge (None: `Advised`).

        Raises InvalidArgument, and keeps the policy in charge, if it cannot
        serve the current streams or its parameters are bad.
        """
        previous = self.selected
        self.selected = None if name is None else (name, policy_kwargs(name, params or {}))
        try:
            self._put_in_charge(self._fresh())
        except (InvalidArgument, ValueError) as exc:
            self.selected = previous
            raise InvalidArgument(str(exc)) from None
        if name is None:
            self._advise_queued()

    def _reshare(self) -> None:
        """The set of streams changed: equal shares, and a fresh policy over them.

        If the selected policy cannot serve them, `Advised` takes over and
        `refused` names the policy, for the driver to eject its advisor."""
        for s, quota in zip(self.streams, self._quotas(), strict=True):
            s.quota = quota
        self.loop.set_streams(self.streams)
        try:
            self._put_in_charge(self._fresh())
        except (InvalidArgument, ValueError) as exc:
            if self.selected is None:
                raise
            self.refused = f"policy {self.selected[0]!r}: {exc}"
            self.selected = None
            self._put_in_charge(self._fresh())
            self._advise_queued()
            if self.on_refused is not None:
                self.on_refused()

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

    def _advised_mask(self, s: ProgramStream, spec: Any) -> int:
        """The mask `Advised` launches a kernel of `s` on: the program's own,
        else the advisor's allocation for its context, else the whole device."""
        if spec.mask is not None:
            return int(spec.mask)
        mask = self._allocation(s.ctx)
        return self.full_mask if mask is None else int(mask)

    def _advise_queued(self) -> None:
        """`Advised` is in charge again: the kernels launched meanwhile get its masks."""
        for column, (s, _, _, spec) in self._kernels.items():
            self.loop.set_kernel_mask(column, self._advised_mask(s, spec))

    def submit(self, ctx: int, stream: int, kernel_id: int, desc: KernelDesc, spec: Any) -> None:
        """Queue a launched kernel on its stream; it runs after the stream's earlier ones."""
        self._submit_run(ctx, stream, [kernel_id], [desc], [spec])
        self._collect()

    def submit_graph(
        self, ctx: int, kernel_ids: list[int], descs: Sequence[KernelDesc], specs: Sequence[Any]
    ) -> None:
        """Queue a launch graph's kernels, each on its `LaunchSpec.stream`, in
        order.  Each run of them on one stream in one priority class reaches
        the loop in one call."""
        start = 0
        n = len(specs)
        while start < n:
            first = specs[start]
            stream, hp = first.stream, first.priority > 0
            end = start + 1
            while end < n and specs[end].stream == stream and (specs[end].priority > 0) == hp:
                end += 1
            self._submit_run(
                ctx, stream, kernel_ids[start:end], descs[start:end], specs[start:end]
            )  # fmt: skip
            start = end
        self._collect()

    def _submit_run(
        self, ctx: int, stream: int, kernel_ids: Sequence[int], descs: Sequence[KernelDesc],
        specs: Sequence[Any],
    ) -> None:  # fmt: skip
        """Kernels launched on one stream, all in the class of the first."""
        hp = specs[0].priority > 0
        s = self.by_stream.get((ctx, stream))
        if s is None:
            s = self.by_stream[(ctx, stream)] = ProgramStream(self, ctx, stream, hp)
            self.streams.append(s)
            self._reshare()
        elif s.hp != hp:
            s.hp = hp
            self._reshare()
        if self.selected is None:
            masks = [self._advised_mask(s, spec) for spec in specs]
        else:
            masks = [self.full_mask] * len(specs)
        priorities = [int(spec.priority) for spec in specs]
        columns = self.loop.submit(s, descs, masks, priorities)
        for column, kernel_id, desc, spec in zip(columns, kernel_ids, descs, specs, strict=True):
            self._kernels[column] = (s, kernel_id, desc, spec)
            self._column[kernel_id] = column
        s.pending += len(columns)

    def _collect(self) -> None:
        """Tell the driver of every kernel the loop finished, in order."""
        for column, done_ns in self.loop.finished():
            s, kernel_id, _, _ = self._kernels.pop(column)
            del self._column[kernel_id]
            s.pending -= 1
            self.gpu.kernel_finished(kernel_id, done_ns)
            self.done[s.ctx] = self.done.get(s.ctx, 0) + 1
            self.last_done_ns[s.ctx] = done_ns
            if self.on_kernel_done is not None:
                self.on_kernel_done(s.ctx, kernel_id)

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
        return sum(s.pending for key, s in self.by_stream.items() if key[0] == ctx)

    def tpcs_in_use(self, ctx: int) -> int:
        """TPCs the masks of `ctx`'s atoms in flight cover."""
        masks = self.loop.inflight_masks()
        union = 0
        for s in self.streams:
            if s.ctx == ctx:
                union |= masks[s.index]
        return union.bit_count()

    def next_event_ns(self) -> int | None:
        """The earliest instant anything can change without a new request: a
        block group ending, a clock change, or one of the policy's timers."""
        times = [t for t in (self.loop.next_timer_ns(), self.gpu.next_event_ns()) if t is not None]
        return min(times) if times else None

    @property
    def busy(self) -> bool:
        return any(s.pending for s in self.streams)

    def report(self) -> dict[str, Any]:
        """The policy in charge's figures."""
        return self.loop.report()

    # -- time ------------------------------------------------------------------

    def catch_up(self, now_ns: int) -> None:
        """Bring the device to the kernel's time, with the policy's timers on the way.

        The device may be ahead of the kernel's time (`run_until_done` ran it
        to an inference batch's completion): then it stays where it is."""
        self.loop.advance(max(now_ns, self.now_ns))
        self._collect()

    def run_until_done(self, kernel_id: int) -> int:
        """Run the device, its completions and the policy's timers in order
        until kernel `kernel_id` (submitted) is done; return when it
        completed.  The device then stands at that instant, which may be
        ahead of the kernel's time.

        Raises GpuError if nothing is left that could ever finish it."""
        while True:
            done_ns = self.gpu.kernel_done_ns(kernel_id)
            if done_ns is not None:
                return done_ns
            column = self._column.get(kernel_id)
            if column is None:
                raise GpuError(f"kernel {kernel_id} was not submitted to the scheduler")
            self.loop.advance(self.now_ns)  # what was launched now starts now
            self._collect()
            if self.gpu.kernel_done_ns(kernel_id) is not None:
                continue
            if self.next_event_ns() is None:
                raise GpuError(f"kernel {kernel_id} cannot finish: the device and policy are idle")
            self.loop.stop_at(column)
            self.loop.advance(self.now_ns + _STEP_NS)
            self.loop.stop_at(-1)
            self._collect()


__all__ = ["Advised", "ProgramStream", "StreamScheduler"]

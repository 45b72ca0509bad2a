"""The vGPU driver server: the kernel task that owns the virtual GPU.

Programs reach the GPU only through this server's endpoint and the caps it
hands out.  `create_context` answers with a *context cap*: a cap to this
server's endpoint minted with the context's badge.  Every request about a
context (alloc, free, launch, sync, destroy) must come through that cap, so
a program can name only the contexts it created — badges cannot be forged.
Destroying a context revokes its cap.  A context whose program exited or was
killed without destroying it is reclaimed once its work is done: the server
checks, every `REAP_PERIOD_NS` it is awake, whether any cap derived from the
context cap is still held (`Derived`), and frees the context and its memory
when none is.

Requests (all are Calls; errors come back as ``Message("error", text)``):

| cap     | label            | payload                   | answer                        |
| ------- | ---------------- | ------------------------- | ----------------------------- |
| gpu     | `create_context` | quota bytes, None, or a   | `context` ctx id + ctx cap    |
|         |                  | `ContextRequest`          |                               |
| gpu     | `stats`          | -                         | `stats` `GpuView`             |
| gpu     | `set_clock`      | MHz                       | `ok` effective time (ns)      |
| gpu     | `trace_start`    | -                         | `ok` (timeline.py records)    |
| gpu     | `trace_stop`     | -                         | `trace` `TimelineEvents`      |
| context | `alloc`          | bytes                     | `handle` id                   |
| context | `free`           | handle                    | `ok`                          |
| context | `launch`         | `LaunchSpec`              | `launched` kernel id          |
| context | `launch_graph`   | `LaunchGraph`             | `launched` its last kernel id |
| context | `sync`           | kernel id or None (all)   | `done` completion time (ns)   |
| context | `poll`           | kernel id                 | `done` time, or `running`     |
| context | `destroy`        | -                         | `ok`                          |
| context | `set_share`      | percent 1-100, or None    | `ok`                          |

Time.  The engine keeps its own clock; on every wake the server advances it
to the kernel's time, handling completions in order, so stream order and
GPU timing are exact.  While a caller waits, the server sets its alarm for
the next instant anything can change on the device (a group of blocks
ending, a clock change, a policy timer), so a `sync` is answered when the
work completes; where the device is ahead of the kernel's time it polls
every `SYNC_TICK_US`.  A driver started with a WAKE_US argument waits at
least that long between such wakes: a realtime kernel whose host cannot
afford a wake at every device event (a busy device under load from the
wall clock, `malv serve`) answers a `sync` up to WAKE_US late.  The device
itself stays exact (the scheduler runs every completion and timer in order
on each wake), and the answer carries the exact completion time.
The driver also offers the device to kernel-space inference: boot hands it a
cap to the MLaaS core, and it registers a vGPU inference back end on its
`InferencePort`, so advisors' batches and programs' kernels contend for the
same TPCs.  The driver stays the engine's only owner: a batch's kernel goes
to the scheduler as a kernel of the inference context's stream, scheduled by
the policy in charge like any other, and the scheduler runs the device, with
every context's completions and the policy's timers in order, until it
completes.  (The batch needs its result at once, so the device may briefly
be ahead of the kernel's time; launches then start at the device's.)  An
advisor that asks for inference while the driver is itself asking it
something gets the CPU: the device is not re-entered.

Sharing.  Programs' streams are scheduled by a `StreamScheduler`
(scheduler.py) under one of the eight sharing policies of
`drivers/vgpu/policies`: the one the attached GPU advisor selects with its
`sharing_policy` (`insmod gpu_lithos`, `insmod gpu_mig`, ...), switched on
the next wake after insmod, rmmod or reload.  With none, the default serves
whole kernels first launched first served at the programs' own priorities,
on the TPCs the advisor's `tpc_allocation` gives each context
(`insmod first_fit` gives each context its own TPCs).  The power advisor is
asked for the clock on each wake (`frequency`) — and, while the device has
work, at least every `GOVERNOR_TICK_US`; an idle device keeps its clock.
`insmod fixed_clock clock_mhz=900` pins the clock; `rmmod` brings back the
whole device at the highest clock.

Kernel ids and memory.  The driver runs for as long as the machine does, so
what it holds is bounded by the work in flight: its engine keeps no history
(api.py, "Ids and memory"), its scheduler records nothing, and a finished
kernel is released to the engine once the policy has heard of it.  The
kernel ids programs get are the driver's own, never reused.  The driver
remembers a finished kernel's completion time until its program has been
told it, by a `sync` or `poll` of that kernel answered `done` (or, as a last
bound, until the context has `KEEP_FINISHED` later finished kernels it was
not told of: a program that only ever syncs all its work).  Asking about it
after that is refused with an error, never answered wrongly.  Of a
`launch_graph`, only the last kernel has an id the program knows.  A trace
(`trace_start`) keeps the last `TRACE_KERNELS` kernels and
`TRACE_SAMPLES` samples of the clock, power and busy TPCs.

Shares.  A VM's back end (vgpu-backend) owns one context, labelled with the
VM's name, and gives it the VM's share with `set_share`: its streams then
split that share of the device under the policy in charge — a LithOS TPC
quota, MIG slices, an MPS thread percentage, or a time slice in proportion.
The default policy keeps serving whole kernels on the whole device: a share
there is shown, not enforced.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from typing import Any

import attrs

from drivers.vgpu.errors import GpuError, InvalidArgument
from drivers.vgpu.timeline import GpuTimeline
from kernel.caps import Rights
from kernel.traps import (
    Alarm,
    BindNotification,
    Delete,
    Derived,
    GetTime,
    Log,
    MapDevice,
    Message,
    Mint,
    NewNotification,
    NewReply,
    Recv,
    Reply,
    Revoke,
)

SYNC_TICK_US = 20
FOREVER_US = 3.6e9  # an hour: no WAKE_US is longer
GOVERNOR_TICK_US = 10_000  # how often the power advisor is asked while the device works
REAP_PERIOD_NS = 1_000_000  # how often idle contexts are checked for holders
KEEP_FINISHED = 1 << 16  # finished kernels a context remembers, untold, at most
TRACE_KERNELS = 1 << 16  # the kernels a trace keeps: the last ones launched
GRAPHS_KEPT = 32  # launch graphs whose checked descriptors are kept (`_graph_descs`)
DESCS_KEPT = 1024  # launches' descriptors kept by value (`_kernel_desc`)
_PLAIN = (str, int, float)  # the types a kept launch's values have, exactly
TRACE_SAMPLES = 1 << 13  # the clock, power and busy-TPC samples a trace keeps


@attrs.frozen
class LaunchSpec:
    """A kernel to launch on a context's stream (kernels of one stream run in order)."""

    name: str
    grid_blocks: int
    block_us: float
    blocks_per_tpc: int = 2
    mem_fraction: float = 0.0
    priority: int = 0
    stream: int = 0
    mask: int | None = None

    def to_wire(self) -> bytes:
        """This launch as the fixed record a guest's GPU queue carries
        (`LAUNCH_WIRE`, version 1, 104 bytes, little-endian):

            offset  type     field
            0       u8       version (1)
            1       u8       flags: bit 0, a mask follows (else mask is 0)
            2       u16      stream
            4       u32      grid_blocks
            8       f64      block_us
            16      f64      mem_fraction
            24      i32      priority
            28      u16      blocks_per_tpc
            30      u8       the name's length in UTF-8 bytes, 1..64
            31      u8       reserved, 0
            32      u64      mask
            40      64 B     the name, UTF-8, zero-padded

        InvalidArgument when a field does not fit its slot; the ranges the
        host accepts are `from_wire`'s."""
        name = self.name.encode("utf-8") if type(self.name) is str else b""
        try:
            return LAUNCH_WIRE.pack(
                1, 0 if self.mask is None else 1, self.stream, self.grid_blocks,
                self.block_us, self.mem_fraction, self.priority, self.blocks_per_tpc,
                len(name), self.mask or 0, name,
            )  # fmt: skip
        except (struct.error, TypeError, OverflowError) as exc:
            raise InvalidArgument(f"a LaunchSpec that does not fit the wire: {exc}") from None

    @classmethod
    def from_wire(cls, buf: bytes | bytearray | memoryview) -> LaunchSpec:
        """The LaunchSpec of one `to_wire` record, from a guest: the length,
        version, flags, padding and every field are checked against the
        ranges of drivers/vgpu/wire.py, after converting each to a plain
        built-in value; anything else is InvalidArgument.  It reads exactly
        `LAUNCH_WIRE.size` bytes and allocates nothing in proportion to `buf`."""
        from drivers.vgpu.wire import MAX_NAME, SPEC_LIMITS

        if len(buf) != LAUNCH_WIRE.size:
            raise InvalidArgument(f"a launch record is {LAUNCH_WIRE.size} bytes, got {len(buf)}")
        (version, flags, stream, grid, block_us, mem_fraction, priority, per_tpc,
         name_len, mask, raw_name) = LAUNCH_WIRE.unpack(buf)  # fmt: skip
        if version != 1:
            raise InvalidArgument(f"launch record version {version} is not 1")
        if flags & ~1:
            raise InvalidArgument(f"launch record flags {flags:#x} name unknown bits")
        if not 0 < name_len <= MAX_NAME or any(raw_name[name_len:]):
            raise InvalidArgument("a kernel name is 1 to 64 bytes, zero-padded")
        try:
            name = str(raw_name[:name_len].decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidArgument("a kernel name is UTF-8") from None
        if not name.isprintable():
            raise InvalidArgument("a kernel name is printable text")
        if flags & 1 and mask == 0 or not flags & 1 and mask != 0:
            raise InvalidArgument("a mask is nonzero exactly when the mask flag is set")
        spec = cls(
            name, int(grid), float(block_us), int(per_tpc), float(mem_fraction), int(priority),
            int(stream), int(mask) if flags & 1 else None,
        )  # fmt: skip
        for key, (low, high) in SPEC_LIMITS.items():
            value = getattr(spec, key)
            if not low <= value <= high:  # (NaN fails every comparison)
                raise InvalidArgument(f"{key} must be within {low}..{high}, got {value!r}")
        return spec


#: LaunchSpec's wire record (see `LaunchSpec.to_wire`).
LAUNCH_WIRE = struct.Struct("<BBHIddiHBxQ64s")


@attrs.frozen
class LaunchGraph:
    """Kernels launched with one request, in order (as a CUDA graph is): an
    inference server launches a model's whole forward pass at once."""

    launches: tuple[LaunchSpec, ...] = attrs.field(converter=tuple)


@attrs.frozen
class ContextRequest:
    """`create_context`'s payload when more than a quota is asked for."""

    quota_bytes: int | None = None
    owner: str = "program"  # the label `gpu` shows (a VM's name for its back end's)
    ctx: int | None = None  # a given free ctx id (a restored VM's), else the next


@attrs.frozen
class ContextView:
    ctx: int
    owner: str  # "program", "kernel" for kernel-space inference, or a VM's name
    memory_bytes: int
    kernels_queued: int
    kernels_done: int
    tpcs: int = 0  # TPCs its atoms in flight may run on
    share: int = 0  # percent of the device given by `set_share` (0: none)


@attrs.frozen
class GpuView:
    """What `gpu` shows: the device's stats, its preset and its contexts."""

    preset: str
    n_tpcs: int
    memory_bytes: int
    stats: Any  # drivers.vgpu.api.GpuStats
    contexts: tuple[ContextView, ...]
    policy: str = "default"  # the sharing policy in charge
    policy_report: Any = None  # its figures (stolen atoms, mispredictions, ...)


@attrs.frozen
class PowerView:
    """What a power advisor sees of the device."""

    clocks_mhz: Any  # every clock the device can run at
    clock_mhz: int
    busy_tpcs: int
    power_w: float


class GpuRequestError(Exception):
    pass


class _Chain:
    """The kernels of one stream that a program's waited kernel runs behind,
    as a lower bound on when it can complete (`earliest_ns`).

    A stream runs its kernels one after another, and no block runs faster
    than it would alone on the whole device at the highest clock
    (`least_ns`), so the waited kernel cannot complete before its stream's
    unfinished kernels of the same launch have each taken at least that
    long.  Earlier launches still queued on the stream only make it later.
    The driver wakes for a waiter at this bound, not at every block the
    device ends meanwhile: the device's results do not depend on when the
    driver wakes, only the driver's work does."""

    __slots__ = ("first", "offsets", "rest_ns", "head", "since_ns")

    def __init__(self, first: int, offsets: tuple[int, ...], rest_ns: tuple[int, ...], now_ns: int):
        self.first = first  # the launch's first kernel id
        self.offsets = offsets  # the chain's kernels, as offsets from `first`, in order
        self.rest_ns = rest_ns  # rest_ns[i]: the least time of chain kernels i, i + 1, ...
        self.head = 0  # the chain's first unfinished kernel
        self.since_ns = now_ns  # when the head could start: launch, or the one before done

    def finished(self, kernel: int, done_ns: int) -> None:
        if self.head < len(self.offsets) and kernel - self.first == self.offsets[self.head]:
            self.head += 1
            self.since_ns = done_ns

    def earliest_ns(self, now_ns: int) -> int:
        """The earliest the waited kernel can complete, at `now_ns` with the head unfinished."""
        h, rest = self.head, self.rest_ns
        if h >= len(self.offsets):
            return now_ns
        later = rest[h + 1] if h + 1 < len(rest) else 0
        return max(now_ns, self.since_ns + rest[h] - later) + later


def least_ns(desc: Any, spec: Any) -> int:
    """The least time a kernel takes: its blocks in full waves on the whole
    device, each as short as a block gets (the highest clock, uncontended
    memory: `BlockCost`)."""
    from drivers.vgpu.work import BlockCost

    cost = BlockCost.of(desc, spec)
    waves = -(-desc.grid_blocks // (spec.n_tpcs * desc.blocks_per_tpc))
    return waves * (cost.compute_ns + cost.mem_ns)


class _Context:
    def __init__(self, ctx: int, cap_slot: int, owner: str = "program") -> None:
        self.ctx = ctx
        self.cap_slot = cap_slot  # the minted context cap, revoked on destroy
        self.owner = owner
        self.share = 0  # percent of the device (set_share)
        # The kernels of it its program can name (see "Kernel ids and
        # memory"): those running, and those finished, with their completion
        # time, that the program has not been told of.
        self.running: set[int] = set()
        self.finished: dict[int, int] = {}

    def knows(self, kernel: Any) -> bool:
        return kernel in self.running or kernel in self.finished


class GpuDriver:
    """The server's state; `gpu_server` is the task that feeds it requests."""

    def __init__(self, preset: str) -> None:
        self.preset = preset
        self._engine: Any = None
        self._scheduler: Any = None
        self.advice: Any = None  # the MLaaS core's GpuAdvice, when boot gave the driver one
        self._policy_key: Any = None  # the advisor's selection the scheduler follows
        self.contexts: dict[int, _Context] = {}
        self.waiters: list[tuple[int, int | None, int]] = []  # (ctx, kernel or None, reply slot)
        #: (ctx, kernel) whose completion was answered since the last
        #: `forget_told`: their programs know, and the driver may forget.
        self.told: list[tuple[int, int]] = []
        self.timeline: GpuTimeline | None = None  # while the shell's `trace` records
        self._next_kernel = 0  # the next kernel id handed to a program
        self._engine_id: dict[int, int] = {}  # running kernels: kernel id -> the engine's
        self._launched: dict[int, tuple[int, int, int]] = {}  # engine's id -> ctx, id, last
        #: Running launches' chains to the kernel their program waits for, by its id.
        self._chains: dict[int, _Chain] = {}
        self._traced_done: dict[int, int] = {}  # kernels the trace keeps, once done
        self._working = 0  # how deep the driver is in its own work (see `_at_work`)
        #: Launches' checked descriptors, by their values (`_kernel_desc`).
        self._descs: dict[tuple, Any] = {}
        #: Launch graphs' checked descriptors and chains (`_graph_descs`).
        self._graphs: dict[int, tuple[Any, tuple, tuple, tuple]] = {}

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from drivers.vgpu.engine import Engine  # loads the compiled engine

            # Equal priorities are served first launched, first served (MPS).
            self._engine = Engine(self.preset, dispatch_order="launch", keep_history=False)
        return self._engine

    @property
    def scheduler(self) -> Any:
        if self._scheduler is None:
            from drivers.vgpu.scheduler import StreamScheduler

            self._scheduler = StreamScheduler(self.engine, self.advised_mask)
            self._scheduler.on_kernel_done = self._kernel_done
            self._scheduler.on_refused = self._check_refused
        return self._scheduler

    @contextlib.contextmanager
    def _at_work(self) -> Iterator[None]:
        """The driver is running its scheduler or asking its advisors: an
        advisor's inference batch that comes meanwhile must not re-enter it."""
        self._working += 1
        try:
            yield
        finally:
            self._working -= 1

    # -- time -------------------------------------------------------------------

    def advance_to(self, now_ns: int) -> None:
        """Bring the device to the kernel's time under the selected policy: each
        stream's next kernel goes to the policy when the previous one completed."""
        if self._engine is None:
            return
        with self._at_work():
            self._advance_to(now_ns)

    def _advance_to(self, now_ns: int) -> None:
        self.follow_policy()
        self.scheduler.catch_up(now_ns)
        self._check_refused()
        self._sample()

    def _sample(self) -> None:
        if self.timeline is not None:
            self.timeline.sample(self._engine)
            _keep_last(self.timeline.counters, 3 * TRACE_SAMPLES)  # three counters a sample

    # -- kernel-space inference (drivers/vgpu/inference.py) -----------------------

    def run_kernel(self, ctx: int, desc: Any, priority: int, now_ns: int) -> tuple[int, Any]:
        """An inference batch's kernel: on the scheduler as a kernel of `ctx`'s
        stream 0, run until it completes; its completion time and result."""
        if self._working:
            raise GpuError("the vGPU driver is busy asking an advisor; the batch cannot wait")
        with self._at_work():
            self._advance_to(now_ns)
            engine_id = self.engine.add_kernel(desc)
            spec = LaunchSpec(
                desc.name, desc.grid_blocks, desc.block_duration_ns / 1000, desc.blocks_per_tpc,
                desc.mem_fraction, priority,
            )  # fmt: skip
            self.scheduler.submit(ctx, 0, engine_id, desc, spec)
            self._check_refused()
            done_ns = self.scheduler.run_until_done(engine_id)
            self._check_refused()
            result = self.engine.kernel_result(engine_id)
            self.engine.release_kernel(engine_id)
            self._sample()
        return done_ns, result

    def contention(self, now_ns: int) -> tuple[int, float]:
        """What LAKE's contention policy sees at `now_ns`: the device's live
        contexts (nvidia-smi's processes) and the share of its TPCs busy (as
        they stand, if the driver is at work: it is not re-entered)."""
        if not self._working:
            self.advance_to(now_ns)
        eng = self.engine
        return len(eng.contexts), eng.busy_tpcs / eng.spec.n_tpcs

    # -- advice (MLaaS GPU and power advisors) ---------------------------------------------

    def follow_policy(self) -> None:
        """Put the sharing policy the attached GPU advisor selects in charge
        (the default when it selects none); eject an advisor whose policy
        cannot run here."""
        if self.advice is None:
            return
        wanted = self.advice.sharing_policy()
        key = None if wanted is None else (wanted[0], repr(sorted(wanted[1].items())))
        if key == self._policy_key:
            return
        name, params = wanted if wanted is not None else (None, None)
        scheduler = self.scheduler
        try:
            scheduler.select(name, params)
            self._policy_key = key
        except InvalidArgument as exc:
            self.advice.refuse_policy(f"the vGPU driver cannot run it: {exc}")
            scheduler.select(None)
            self._policy_key = None

    def _check_refused(self) -> None:
        scheduler = self._scheduler
        if scheduler is not None and scheduler.refused is not None:
            if self.advice is not None:
                self.advice.refuse_policy(f"the vGPU driver cannot run it: {scheduler.refused}")
            scheduler.refused = None
            self._policy_key = None

    def advised_mask(self, ctx_id: int) -> int | None:
        """The attached GPU advisor's TPC allocation for a context; None: the
        whole device (no advisor, no opinion, or a fault and its ejection)."""
        if self.advice is None:
            return None
        allocation = self.advice.tpc_allocation(sorted(self.contexts), self.engine.spec.n_tpcs)
        return None if allocation is None else allocation.get(ctx_id)

    def advise_clock(self) -> None:
        """Ask the attached power advisor for the clock; a change takes the
        device's switch latency, so none is asked while one is pending."""
        if self.advice is None or self._engine is None:
            return
        eng = self._engine
        if eng.pending_clocks():
            return
        with self._at_work():
            wanted = self.advice.frequency(
                PowerView(eng.spec.clocks_mhz, eng.clock_mhz, eng.busy_tpcs, eng.power_w)
            )
        if wanted is not None and wanted != eng.clock_mhz:
            self.scheduler.set_clock(wanted)

    def busy(self) -> bool:
        return self._scheduler is not None and self._scheduler.busy

    def next_event_ns(self, now_ns: int) -> int | None:
        """When the device or the policy can next change anything, with the
        launches served at `now_ns` dispatched (None: nothing is pending)."""
        if self._scheduler is None:
            return None
        with self._at_work():
            self._scheduler.catch_up(now_ns)
        return self._scheduler.next_event_ns()

    def earliest_done_ns(self, waiters: list[tuple[int, int | None, int]], now_ns: int) -> int:
        """The earliest any of `waiters` can have its work done (`_Chain`);
        `now_ns` for one that waits for a whole context's work."""
        earliest = None
        for _, kernel, _ in waiters:
            chain = None if kernel is None else self._chains.get(kernel)
            at = now_ns if chain is None else chain.earliest_ns(now_ns)
            if earliest is None or at < earliest:
                earliest = at
                if at <= now_ns:
                    break
        return now_ns if earliest is None else earliest

    def finished(self, ctx_id: int, kernel: int | None) -> int | None:
        """The completion time of a kernel the context knows (or of all the
        context's work), or None while it runs."""
        if kernel is not None:
            if kernel in self.contexts[ctx_id].running:
                return None  # the scheduler moves it to `finished` when it completes
            return self.contexts[ctx_id].finished[kernel]
        if ctx_id not in self.contexts or not self.scheduler.context_idle(ctx_id):
            return None
        return self.scheduler.last_done_ns.get(ctx_id, self.engine.now_ns)

    def forget_told(self) -> None:
        """Forget the finished kernels whose programs were told (`told`)."""
        for ctx_id, kernel in self.told:
            ctx = self.contexts.get(ctx_id)
            if ctx is not None:
                ctx.finished.pop(kernel, None)
        self.told.clear()

    def _kernel_done(self, ctx_id: int, engine_id: int) -> None:
        """The scheduler's word that a kernel finished: note its time where a
        program or the trace may ask, and release it to the engine."""
        launched = self._launched.pop(engine_id, None)
        if launched is None:  # not launched through the driver
            return
        _, kernel, last = launched
        done_ns = self.engine.kernel_done_ns(engine_id)
        assert done_ns is not None  # the scheduler heard it finish
        del self._engine_id[kernel]
        named = kernel == last
        chain = self._chains.pop(last, None) if named else self._chains.get(last)
        if chain is not None and not named:
            chain.finished(kernel, done_ns)
        ctx = self.contexts.get(ctx_id)
        if ctx is not None and named:
            ctx.running.discard(kernel)
            ctx.finished[kernel] = done_ns
            if len(ctx.finished) > KEEP_FINISHED:
                self._forget_oldest(ctx)
        if self.timeline is not None:
            self._traced_done[kernel] = done_ns
        self.engine.release_kernel(engine_id)

    def _forget_oldest(self, ctx: _Context) -> None:
        """Forget the context's oldest finished kernel that no one waits for."""
        waited = {kernel for c, kernel, _ in self.waiters if c == ctx.ctx}
        for kernel in ctx.finished:
            if kernel not in waited:
                del ctx.finished[kernel]
                return

    # -- the trace (the shell's `trace`) ------------------------------------------------

    def start_trace(self) -> None:
        self.timeline = GpuTimeline(self.preset)
        self.timeline.sample(self.engine)

    def stop_trace(self) -> Any:
        """The trace's events (a `TimelineEvents`); tracing stops."""
        if self.timeline is None:
            raise GpuRequestError("the GPU is not tracing")
        events = self.timeline.events(_TracedKernels(self))
        self.timeline = None
        self._traced_done.clear()
        return events

    def traced_done_ns(self, kernel: int) -> int | None:
        """A traced kernel's completion time (None: not done)."""
        engine_id = self._engine_id.get(kernel)
        if engine_id is not None:
            return self.engine.kernel_done_ns(engine_id)
        return self._traced_done.get(kernel)

    # -- requests ---------------------------------------------------------------

    def context(self, badge: int) -> _Context:
        ctx = self.contexts.get(badge - 1)
        if badge == 0 or ctx is None:
            raise GpuRequestError("this request needs a context cap (from create_context)")
        return ctx

    def launch(self, ctx: _Context, spec: Any) -> int:
        if not isinstance(spec, LaunchSpec):
            raise GpuRequestError(f"launch needs a LaunchSpec, got {type(spec).__name__}")
        desc = self._kernel_desc(spec)
        return self._submit(ctx, (spec,), (desc,), ((0,), (least_ns(desc, self.engine.spec),)))

    def launch_graph(self, ctx: _Context, graph: Any) -> int:
        """Launch a graph's kernels in order; returns the last one's id.  Every
        kernel is checked before any is launched."""
        return self._submit(ctx, graph.launches, *self._graph_descs(graph))

    def _graph_descs(self, graph: Any) -> tuple[tuple[Any, ...], tuple]:
        """A launch graph's kernel descriptors, every one checked, and its last
        kernel's chain: the offsets of the kernels on its stream, and the
        least time from each of them on (`_Chain`).  A program launches the
        same graph again and again: the last GRAPHS_KEPT graphs have theirs
        kept (by the graph and its tuple of launches, which are immutable)."""
        entry = self._graphs.get(id(graph))
        if entry is not None and entry[0] is graph and entry[1] is graph.launches:
            return entry[2], entry[3]
        if not isinstance(graph, LaunchGraph) or not graph.launches:
            raise GpuRequestError("launch_graph needs a LaunchGraph of at least one LaunchSpec")
        if type(graph.launches) is not tuple or not all(
            isinstance(spec, LaunchSpec) for spec in graph.launches
        ):
            raise GpuRequestError("a LaunchGraph holds LaunchSpecs only")
        descs = tuple(self._kernel_desc(spec) for spec in graph.launches)
        stream = graph.launches[-1].stream
        offsets = tuple(i for i, spec in enumerate(graph.launches) if spec.stream == stream)
        rest, total = [], 0
        for i in reversed(offsets):
            total += least_ns(descs[i], self.engine.spec)
            rest.append(total)
        chain = (offsets, tuple(reversed(rest)))
        if len(self._graphs) >= GRAPHS_KEPT:
            self._graphs.pop(next(iter(self._graphs)))
        self._graphs[id(graph)] = (graph, graph.launches, descs, chain)  # holding it keeps its id
        return descs, chain

    def _kernel_desc(self, spec: LaunchSpec) -> Any:
        """The checked kernel descriptor of a launch.  Launches of plain
        values that a program repeats get the same descriptor (the last
        DESCS_KEPT kept), so the engine knows its block costs already."""
        if spec.mask is not None:
            from drivers.vgpu.work import check_mask

            try:
                check_mask(spec.mask, self.engine.spec.n_tpcs)
            except (ValueError, TypeError) as exc:
                raise GpuRequestError(str(exc)) from None
        values = (
            spec.name, spec.grid_blocks, spec.blocks_per_tpc, spec.block_us, spec.mem_fraction,
            spec.priority,
        )  # fmt: skip
        key = tuple((type(v), v) for v in values)  # 1 and True, or 1 and 1.0, differ here
        if not all(t in _PLAIN for t, _ in key):
            return self._new_kernel_desc(spec)
        desc = self._descs.get(key)
        if desc is None:
            desc = self._new_kernel_desc(spec)
            if len(self._descs) >= DESCS_KEPT:
                self._descs.pop(next(iter(self._descs)))
            self._descs[key] = desc
        return desc

    def _new_kernel_desc(self, spec: LaunchSpec) -> Any:
        from drivers.vgpu.work import KernelDesc

        try:
            desc = KernelDesc(
                name=spec.name, grid_blocks=spec.grid_blocks, blocks_per_tpc=spec.blocks_per_tpc,
                block_duration_ns=round(spec.block_us * 1000), mem_fraction=spec.mem_fraction,
                priority=spec.priority,
            )  # fmt: skip
        except (ValueError, TypeError) as exc:
            raise GpuRequestError(str(exc)) from None
        return desc

    def _submit(
        self, ctx: _Context, specs: tuple[Any, ...], descs: tuple[Any, ...], chain: tuple
    ) -> int:
        """Launch kernels in order; returns the last one's id, which the
        program gets (it waits for the last of a graph); `chain` is its chain's
        offsets and least times (`_Chain`)."""
        engine = self.engine
        engine_ids = [engine.add_kernel(desc) for desc in descs]
        first = self._next_kernel
        last = first + len(descs) - 1
        self._next_kernel = last + 1
        for kernel, engine_id in enumerate(engine_ids, first):
            self._engine_id[kernel] = engine_id
            self._launched[engine_id] = (ctx.ctx, kernel, last)
        ctx.running.add(last)
        self._chains[last] = _Chain(first, chain[0], chain[1], engine.now_ns)
        if self.timeline is not None:
            self._trace_launches(ctx, first, specs)
        with self._at_work():  # a new stream may ask the advisor for TPCs
            self.scheduler.submit_graph(ctx.ctx, engine_ids, descs, specs)
            self._check_refused()
        return last

    def _trace_launches(self, ctx: _Context, first: int, specs: tuple[Any, ...]) -> None:
        """Trace kernels `first`, `first` + 1, ... launched now by `ctx`."""
        timeline = self.timeline
        assert timeline is not None
        now_ns = self.engine.now_ns
        for kernel, spec in enumerate(specs, first):
            timeline.launched(kernel, ctx.ctx, spec.name, now_ns)
        gone = timeline.launches[0][0]
        if _keep_last(timeline.launches, TRACE_KERNELS):
            # Kernel ids ascend with launches: those cut are the ids from
            # the old first to the new one, and so are their completions.
            for kernel in range(gone, timeline.launches[0][0]):
                self._traced_done.pop(kernel, None)

    def set_share(self, ctx: _Context, percent: Any) -> None:
        """Give a context `percent` of the device (None: no share of its own)."""
        if percent is not None and (type(percent) is not int or not 1 <= percent <= 100):
            raise GpuRequestError(f"a share is a percent, 1 to 100, or None; got {percent!r}")
        ctx.share = percent or 0
        with self._at_work():
            self.scheduler.set_share(ctx.ctx, None if percent is None else percent / 100)
            self._check_refused()

    def destroy(self, ctx: _Context) -> None:
        """Forget an idle context: its streams, and its device memory."""
        self.engine.destroy_context(ctx.ctx)  # frees its device memory too
        del self.contexts[ctx.ctx]
        with self._at_work():
            self.scheduler.remove_context(ctx.ctx)
            self._check_refused()

    def view(self) -> GpuView:
        eng = self.engine
        contexts = []
        sched = self.scheduler
        for ctx_id in eng.contexts:
            c = self.contexts.get(ctx_id)  # None: not a program's, kernel-space inference's
            contexts.append(
                ContextView(
                    ctx_id,
                    "kernel" if c is None else c.owner,
                    eng.memory.used_bytes(ctx_id),
                    sched.queued(ctx_id),
                    sched.done.get(ctx_id, 0),
                    sched.tpcs_in_use(ctx_id),
                    0 if c is None else c.share,
                )  # fmt: skip
            )
        return GpuView(
            self.preset, eng.spec.n_tpcs, eng.spec.memory_bytes, eng.stats(), tuple(contexts),
            self.scheduler.policy.label, self.scheduler.report(),
        )  # fmt: skip


class InferencePort:
    """The driver's port for kernel-space inference (inference.py's `GpuPort`):
    what the back end may do with the device, all of it through the driver."""

    def __init__(self, driver: GpuDriver) -> None:
        self._driver = driver

    @property
    def spec(self) -> Any:
        return self._driver.engine.spec

    @property
    def now_ns(self) -> int:
        return self._driver.engine.now_ns

    def create_context(self) -> int:
        return self._driver.engine.create_context()

    def run_kernel(self, ctx: int, desc: Any, priority: int, now_ns: int) -> tuple[int, Any]:
        return self._driver.run_kernel(ctx, desc, priority, now_ns)

    def contention(self, now_ns: int) -> tuple[int, float]:
        return self._driver.contention(now_ns)


def gpu_server(proc):
    """The vGPU driver task: ``vgpu [PRESET] [WAKE_US]``.  PRESET defaults to
    a100; WAKE_US, the shortest wait between wakes for callers, to 0."""
    ep = proc.caps["endpoint"]
    driver = GpuDriver(proc.argv[0] if proc.argv else "a100")
    wake_us = _wake_us(proc.argv[1]) if len(proc.argv) > 1 else 0.0
    if "mlaas" in proc.caps:
        # Offer the device to kernel-space inference (LAKE): modules' batches
        # then run on this engine, beside the programs' kernels.
        from drivers.vgpu.inference import attach_to_core

        core = yield MapDevice(proc.caps["mlaas"])
        attach_to_core(core, port=InferencePort(driver))
        driver.advice = core.gpu  # launches and clocks follow the attached advisors
    timer = yield NewNotification()
    yield BindNotification(timer)
    reply = yield NewReply()
    spare: list[int] = []  # reply objects free for reuse
    tick_ns: int | None = None  # when the alarm set last fires
    reap_ns = 0  # when idle contexts are next checked for holders
    while True:
        r = yield Recv(ep, reply)
        now = yield GetTime()
        driver.advance_to(now)
        driver.advise_clock()
        if now >= reap_ns and driver.contexts:
            yield from _reap(driver)
            reap_ns = now + REAP_PERIOD_NS
        if r.msg.label == "notification":
            if tick_ns is not None and now >= tick_ns:
                tick_ns = None
        else:
            answer = yield from _serve(driver, ep, r)
            if isinstance(answer, _Park):
                # The caller stays bound to this reply object until its work
                # is done; the next request is received on another one.
                driver.waiters.append((answer.ctx, answer.kernel, reply))
                reply = spare.pop() if spare else (yield NewReply())
            else:
                yield Reply(reply, answer)
        # Answer the waiters whose work is done, and keep ticking for the rest.
        still = []
        for ctx, kernel, slot in driver.waiters:
            if ctx not in driver.contexts:  # reaped: the waiter is gone
                spare.append(slot)
                continue
            done_ns = driver.finished(ctx, kernel)
            if done_ns is None:
                still.append((ctx, kernel, slot))
            else:
                yield Reply(slot, Message("done", done_ns))
                if kernel is not None:
                    driver.told.append((ctx, kernel))
                spare.append(slot)
        driver.waiters = still
        driver.forget_told()  # after every waiter on the same kernel was answered
        if still or (driver.advice is not None and driver.busy()):
            # Poll for the waiters; while the device works, the power advisor
            # is asked again at least every governor tick.  A waiter that
            # arrives during a governor tick gets a sooner alarm of its own.
            period_us: float = GOVERNOR_TICK_US
            if still:
                # A waiter is answered when its work completes, which can
                # only be at one of the device's or the policy's events, and
                # not before its stream's kernels can have run: wake at the
                # later of the two (polling every sync tick if the device is
                # ahead), and at least every governor tick for the advisors.
                event_ns = driver.next_event_ns(now)
                if event_ns is not None:
                    due_ns = max(event_ns, driver.earliest_done_ns(still, now))
                    period_us = (due_ns - now + 0.5) / 1000 if due_ns > now else SYNC_TICK_US
                    if driver.advice is not None:
                        period_us = min(period_us, GOVERNOR_TICK_US)
                    period_us = max(period_us, wake_us)
            due_ns = now + int(period_us * 1000)
            if tick_ns is None or due_ns < tick_ns:
                yield Alarm(timer, period_us)
                tick_ns = due_ns


def _keep_last(events: list, limit: int) -> bool:
    """Keep the last `limit` entries of a trace's list, cutting it an eighth
    of `limit` at a time (a cut moves the whole list); True if it cut."""
    if len(events) <= limit + limit // 8:
        return False
    del events[: len(events) - limit]
    return True


class _TracedKernels:
    """What `GpuTimeline.events` asks the device, answered by the driver:
    traced kernels by the ids programs know."""

    def __init__(self, driver: GpuDriver) -> None:
        self.now_ns = driver.engine.now_ns
        self.kernel_done_ns = driver.traced_done_ns


def _wake_us(text: str) -> float:
    """The driver's WAKE_US argument: microseconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < FOREVER_US:
        raise InvalidArgument(f"vgpu: WAKE_US must be microseconds, 0 or more; got {text!r}")
    return value


def _reap(driver: GpuDriver, only: int | None = None):
    """Destroy the idle contexts nobody holds a cap to any more: their program
    exited or was killed without destroying them (its work ran to the end).
    With `only`, just that context, if it is such a one."""
    for ctx in list(driver.contexts.values()):
        if only is not None and ctx.ctx != only:
            continue
        if not driver.scheduler.context_idle(ctx.ctx):
            continue
        if (yield Derived(ctx.cap_slot)) == 0:
            yield Delete(ctx.cap_slot)
            driver.destroy(ctx)
            yield Log("context reclaimed", (("ctx", ctx.ctx), ("reason", "no holder")))


def _context_request(payload: Any) -> ContextRequest:
    """`create_context`'s payload as a ContextRequest (a bare quota, or none)."""
    if not isinstance(payload, ContextRequest):
        return ContextRequest(payload if isinstance(payload, int) else None)
    if type(payload.owner) is not str or not payload.owner:
        raise GpuRequestError(f"a context's owner is a name, got {payload.owner!r}")
    return payload


@attrs.frozen
class _Park:
    """`_serve`'s answer when the caller must wait for the device."""

    ctx: int
    kernel: int | None


def _serve(driver: GpuDriver, ep: int, r):
    """Handle one request; returns the answer message, or `_Park`."""
    label, payload = r.msg.label, r.msg.payload
    try:
        if label == "create_context":
            asked = _context_request(payload)
            if asked.ctx is not None:
                # The id of a context nobody holds any more (a destroyed VM's,
                # asked for by its restored back end) is reclaimed now, not at
                # the next reap.
                yield from _reap(driver, only=asked.ctx)
            ctx = driver.engine.create_context(asked.quota_bytes, asked.ctx)
            slot = yield Mint(ep, Rights.WRITE | Rights.GRANT, badge=ctx + 1)
            driver.contexts[ctx] = _Context(ctx, slot, asked.owner)
            return Message("context", ctx, caps=(slot,))
        if label == "stats":
            return Message("stats", driver.view())
        if label == "set_clock":
            return Message("ok", driver.scheduler.set_clock(payload))
        if label == "trace_start":
            driver.start_trace()
            return Message("ok")
        if label == "trace_stop":
            return Message("trace", driver.stop_trace())
        ctx = driver.context(r.badge)
        if label == "alloc":
            return Message("handle", driver.engine.memory.alloc(ctx.ctx, payload))
        if label == "free":
            driver.engine.memory.free(ctx.ctx, payload)
            return Message("ok")
        if label == "launch":
            return Message("launched", driver.launch(ctx, payload))
        if label == "launch_graph":
            return Message("launched", driver.launch_graph(ctx, payload))
        if label in ("sync", "poll"):  # poll: sync's answer, without waiting (a VM's back end)
            if (payload is not None or label == "poll") and not ctx.knows(payload):
                raise GpuRequestError(
                    f"kernel {payload!r} is not this context's, or it finished and a sync "
                    "or poll said so: the driver no longer remembers it"
                )
            done_ns = driver.finished(ctx.ctx, payload)
            if done_ns is not None:
                if payload is not None:
                    driver.told.append((ctx.ctx, payload))
                return Message("done", done_ns)
            return _Park(ctx.ctx, payload) if label == "sync" else Message("running")
        if label == "set_share":
            driver.set_share(ctx, payload)
            return Message("ok")
        if label == "destroy":
            if not driver.scheduler.context_idle(ctx.ctx):
                raise GpuRequestError("the context still has work on the device; sync first")
            yield Revoke(ctx.cap_slot)
            driver.destroy(ctx)
            return Message("ok")
        raise GpuRequestError(f"unknown request {label!r}")
    except (GpuRequestError, GpuError, ValueError, LookupError, TypeError) as exc:
        # The device refused, and its state is unchanged.
        return Message("error", str(exc))

"""The vGPU driver server: the kernel task that owns the virtual GPU.

Programs reach the GPU only through this server's endpoint and the caps it
hands out.  `create_context` answers with a *context cap*: a cap to this
server's endpoint minted with the context's badge.  Every request about a
context (alloc, free, launch, sync, destroy) must come through that cap, so
a program can name only the contexts it created — badges cannot be forged.
Destroying a context revokes its cap.

Requests (all are Calls; errors come back as ``Message("error", text)``):

| cap     | label            | payload                   | answer                        |
| ------- | ---------------- | ------------------------- | ----------------------------- |
| gpu     | `create_context` | quota bytes or None       | `context` ctx id + ctx cap    |
| gpu     | `stats`          | -                         | `stats` `GpuView`             |
| gpu     | `set_clock`      | MHz                       | `ok` effective time (ns)      |
| context | `alloc`          | bytes                     | `handle` id                   |
| context | `free`           | handle                    | `ok`                          |
| context | `launch`         | `LaunchSpec`              | `launched` kernel id          |
| context | `sync`           | kernel id or None (all)   | `done` completion time (ns)   |
| context | `destroy`        | -                         | `ok`                          |

Time.  The engine keeps its own clock; on every wake the server advances it
to the kernel's time, handling completions in order, so stream order and
GPU timing are exact.  Only the answer to a `sync` is quantised: while a
caller waits, the server wakes every `SYNC_TICK_US` (a polling driver).
The driver also offers the device to kernel-space inference: boot hands it a
cap to the MLaaS core, and it registers a vGPU inference back end sharing its
engine, so advisors' batches and programs' kernels contend for the same TPCs.
(An inference batch runs the engine to its own completion, so the device may
briefly be ahead of the kernel's time; launches then start at the device's.)

Advice.  With the MLaaS core, the driver asks the attached GPU advisor for a
TPC mask for each launch that names none (`tpc_allocation`), and the power
advisor for the clock on each wake (`frequency`) — and, while the device has
work, at least every `GOVERNOR_TICK_US`; an idle device keeps its clock.  `insmod first_fit` then
gives each context its own TPCs, `insmod fixed_clock clock_mhz=900` pins the
clock; `rmmod` brings back the whole device at the highest clock.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs

from drivers.vgpu.errors import GpuError
from kernel.caps import Rights
from kernel.traps import (
    Alarm,
    BindNotification,
    GetTime,
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
GOVERNOR_TICK_US = 10_000  # how often the power advisor is asked while the device works


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


@attrs.frozen
class ContextView:
    ctx: int
    owner: str  # "program", or "kernel" for kernel-space inference
    memory_bytes: int
    kernels_queued: int
    kernels_done: int


@attrs.frozen
class GpuView:
    """What `gpu` shows: the device's stats, its preset and its contexts."""

    preset: str
    n_tpcs: int
    memory_bytes: int
    stats: Any  # drivers.vgpu.api.GpuStats
    contexts: tuple[ContextView, ...]


@attrs.frozen
class PowerView:
    """What a power advisor sees of the device."""

    clocks_mhz: Any  # every clock the device can run at
    clock_mhz: int
    busy_tpcs: int
    power_w: float


class GpuRequestError(Exception):
    pass


class _Context:
    def __init__(self, ctx: int, cap_slot: int) -> None:
        self.ctx = ctx
        self.cap_slot = cap_slot  # the minted context cap, revoked on destroy
        self.streams: dict[int, deque[int]] = {}  # stream -> kernel ids not yet launched
        self.running: dict[int, int] = {}  # stream -> kernel id on the device
        self.specs: dict[int, LaunchSpec] = {}
        self.done = 0


class GpuDriver:
    """The server's state; `gpu_server` is the task that feeds it requests."""

    def __init__(self, preset: str) -> None:
        self.preset = preset
        self._engine: Any = None
        self.advice: Any = None  # the MLaaS core's GpuAdvice, when boot gave the driver one
        self.contexts: dict[int, _Context] = {}
        self.waiters: list[tuple[int, int | None, int]] = []  # (ctx, kernel or None, reply slot)

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from drivers.vgpu.engine import Engine  # loads the compiled engine

            self._engine = Engine(self.preset)
        return self._engine

    # -- time -------------------------------------------------------------------

    def advance_to(self, now_ns: int) -> None:
        """Bring the device to the kernel's time, launching each stream's next
        kernel at the instant the previous one completed."""
        if self._engine is None:
            return
        eng = self._engine
        while eng.now_ns < now_ns:
            for done in eng.advance(now_ns):
                if done.kernel_done:
                    self._kernel_completed(done.ctx, done.kernel_id)

    def _kernel_completed(self, ctx_id: int, kernel_id: int) -> None:
        ctx = self.contexts.get(ctx_id)
        if ctx is None:
            return
        ctx.done += 1
        for stream, running in list(ctx.running.items()):
            if running == kernel_id:
                del ctx.running[stream]
                self._launch_next(ctx, stream)

    def _launch_next(self, ctx: _Context, stream: int) -> None:
        queue = ctx.streams.get(stream)
        if stream in ctx.running or not queue:
            return
        kernel_id = queue.popleft()
        spec = ctx.specs[kernel_id]
        mask = spec.mask if spec.mask is not None else self.advised_mask(ctx.ctx)
        self.engine.launch(ctx.ctx, kernel_id, mask=mask, priority=spec.priority)
        ctx.running[stream] = kernel_id

    # -- advice (MLaaS GPU and power advisors) ---------------------------------------------

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
        if eng.stats().pending_clocks:
            return
        wanted = self.advice.frequency(
            PowerView(eng.spec.clocks_mhz, eng.clock_mhz, eng.busy_tpcs, eng.power_w)
        )
        if wanted is not None and wanted != eng.clock_mhz:
            eng.set_clock(wanted)

    def busy(self) -> bool:
        return any(c.running for c in self.contexts.values())

    def finished(self, ctx_id: int, kernel_id: int | None) -> int | None:
        """The completion time of a kernel (or of all the context's work), or None."""
        eng = self.engine
        ctx = self.contexts.get(ctx_id)
        if kernel_id is not None:
            return eng.kernel_done_ns(kernel_id)
        if ctx is None or ctx.running or any(ctx.streams.values()):
            return None
        return eng.now_ns

    # -- requests ---------------------------------------------------------------

    def context(self, badge: int) -> _Context:
        ctx = self.contexts.get(badge - 1)
        if badge == 0 or ctx is None:
            raise GpuRequestError("this request needs a context cap (from create_context)")
        return ctx

    def launch(self, ctx: _Context, spec: Any) -> int:
        from drivers.vgpu.work import KernelDesc

        if not isinstance(spec, LaunchSpec):
            raise GpuRequestError(f"launch needs a LaunchSpec, got {type(spec).__name__}")
        try:
            desc = KernelDesc(
                name=spec.name, grid_blocks=spec.grid_blocks, blocks_per_tpc=spec.blocks_per_tpc,
                block_duration_ns=int(spec.block_us * 1000), mem_fraction=spec.mem_fraction,
                priority=spec.priority,
            )  # fmt: skip
            if spec.mask is not None:
                from drivers.vgpu.work import check_mask

                check_mask(spec.mask, self.engine.spec.n_tpcs)
        except (ValueError, TypeError) as exc:
            raise GpuRequestError(str(exc)) from None
        kernel_id = self.engine.add_kernel(desc)
        ctx.specs[kernel_id] = spec
        ctx.streams.setdefault(spec.stream, deque()).append(kernel_id)
        self._launch_next(ctx, spec.stream)
        return kernel_id

    def view(self) -> GpuView:
        eng = self.engine
        contexts = []
        for ctx_id in eng.contexts:
            c = self.contexts.get(ctx_id)
            if c is None:  # not a program's: kernel-space inference's
                contexts.append(ContextView(ctx_id, "kernel", eng.memory.used_bytes(ctx_id), 0, 0))
                continue
            queued = sum(len(q) for q in c.streams.values()) + len(c.running)
            contexts.append(
                ContextView(ctx_id, "program", eng.memory.used_bytes(ctx_id), queued, c.done)
            )
        return GpuView(
            self.preset, eng.spec.n_tpcs, eng.spec.memory_bytes, eng.stats(), tuple(contexts)
        )


def gpu_server(proc):
    """The vGPU driver task.  argv[0] is the device preset (default a100)."""
    ep = proc.caps["endpoint"]
    driver = GpuDriver(proc.argv[0] if proc.argv else "a100")
    if "mlaas" in proc.caps:
        # Offer the device to kernel-space inference (LAKE): modules' batches
        # then run on this engine, beside the programs' kernels.
        from drivers.vgpu.inference import attach_to_core

        core = yield MapDevice(proc.caps["mlaas"])
        attach_to_core(core, driver.engine)
        driver.advice = core.gpu  # launches and clocks follow the attached advisors
    timer = yield NewNotification()
    yield BindNotification(timer)
    reply = yield NewReply()
    spare: list[int] = []  # reply objects free for reuse
    ticking = False
    while True:
        r = yield Recv(ep, reply)
        now = yield GetTime()
        driver.advance_to(now)
        driver.advise_clock()
        if r.msg.label == "notification":
            ticking = False
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
            done_ns = driver.finished(ctx, kernel)
            if done_ns is None:
                still.append((ctx, kernel, slot))
            else:
                yield Reply(slot, Message("done", done_ns))
                spare.append(slot)
        driver.waiters = still
        if not ticking and (still or (driver.advice is not None and driver.busy())):
            # Poll for the waiters; while the device works, the power advisor
            # is asked again at least every governor tick.
            yield Alarm(timer, SYNC_TICK_US if still else GOVERNOR_TICK_US)
            ticking = True


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
            eng = driver.engine
            ctx = eng.create_context(payload if isinstance(payload, int) else None)
            slot = yield Mint(ep, Rights.WRITE | Rights.GRANT, badge=ctx + 1)
            driver.contexts[ctx] = _Context(ctx, slot)
            return Message("context", ctx, caps=(slot,))
        if label == "stats":
            return Message("stats", driver.view())
        if label == "set_clock":
            return Message("ok", driver.engine.set_clock(payload))
        ctx = driver.context(r.badge)
        if label == "alloc":
            return Message("handle", driver.engine.memory.alloc(ctx.ctx, payload))
        if label == "free":
            driver.engine.memory.free(ctx.ctx, payload)
            return Message("ok")
        if label == "launch":
            return Message("launched", driver.launch(ctx, payload))
        if label == "sync":
            if payload is not None and payload not in ctx.specs:
                raise GpuRequestError(f"kernel {payload!r} is not this context's")
            done_ns = driver.finished(ctx.ctx, payload)
            return Message("done", done_ns) if done_ns is not None else _Park(ctx.ctx, payload)
        if label == "destroy":
            if ctx.running or any(ctx.streams.values()):
                raise GpuRequestError("the context still has work on the device; sync first")
            yield Revoke(ctx.cap_slot)
            driver.engine.destroy_context(ctx.ctx)  # frees its device memory too
            del driver.contexts[ctx.ctx]
            return Message("ok")
        raise GpuRequestError(f"unknown request {label!r}")
    except (GpuRequestError, GpuError, ValueError, LookupError, TypeError) as exc:
        # The device refused, and its state is unchanged.
        return Message("error", str(exc))

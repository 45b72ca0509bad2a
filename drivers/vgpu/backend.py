"""A VM's GPU back end: the host task that serves one guest's GPU queue (`drivers/vgpu`).

The hypervisor starts `vgpu-backend VM SHARE` on the host when the VM
starts (kernel/hypervisor/vm.py), with the host's vGPU driver endpoint
(`gpu`), the VM's `HostQueue` (`queue`) and the notification its kicks
signal (`kick`).  The back end owns ONE context on the host's vGPU for the
whole VM, labelled with the VM's name and given the VM's share
(`set_share`), and serves on it what the guest's front end (frontend.py)
publishes, one binary request per chain (wire.py), every chain published
by one kick in one wake.  It reads each request through a view of the
guest's window (`Device.take`), decoded at once into plain values.

Isolation.  Everything a guest names is a virtual id of this VM's own:
its contexts, buffer handles and kernel ids are numbers the back end hands
out and translates to host ids, so a guest can name nothing of another
guest's, and a number it was not given is answered with an error.  The
(context, stream) pairs of the guest's live contexts map to distinct host
streams of the VM's context (`VmGpu.free_lane`).

Launches.  The guest names each launched kernel itself, with ids that
ascend (`next_kernel`): its front end answers a launch without waiting for
the host.  A launch the host refuses is kept as its context's error
(`VmGpu.refused`, not in a snapshot) and answers the context's next `sync`.

Blocking.  A `sync` waits for the device, so the dispatcher never makes one:
it polls the host (`poll`), answers at once if the work is done, and
otherwise hands the sync to one of `WORKERS` worker tasks, which Call the dispatcher for
work (seL4 style: each worker parks on the dispatcher's reply object until
a job comes), sync on the host and answer the guest themselves.  When the
dispatcher dies (its VM is gone), its reply objects go with it, and the
parked workers get an error and exit.

State.  Every table lives in `HostQueue.state` as plain values, so that a
snapshot keeps it; a restored back end recreates its context with the same
ctx id and its allocations, then serves.  `HostQueue.quiet` is True exactly
when no guest request is outstanding and no kernel it launched is unknown
to have finished; a QUIESCE signal makes it sync every such kernel.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs

from drivers.vgpu import wire
from drivers.vgpu.server import ContextRequest, GpuView
from kernel.caps import Rights
from kernel.errors import SyscallError
from kernel.hypervisor.port import KICK, QUIESCE
from kernel.traps import (
    BindNotification,
    Call,
    Exit,
    GetTime,
    MapDevice,
    Message,
    Mint,
    NewEndpoint,
    NewReply,
    Recv,
    Reply,
    Spawn,
)

WORKERS = 4  # syncs served at once; more wait in the dispatcher's queue
STREAMS_PER_CONTEXT = wire.MAX_STREAM + 1


class Refused(Exception):
    """A request this VM may not make; the guest gets its reason."""


@attrs.frozen
class SyncJob:
    """Work for a worker: wait for `kernels` (guest ids), then answer `request`
    (None: a quiesce) with `then` ("done", or "destroy" of guest context `ctx`)."""

    request: Any
    kernels: tuple[int, ...]
    then: str = "done"
    ctx: int = 0


class VmGpu:
    """The VM's tables, kept in the queue's `state` dict as plain values."""

    def __init__(self, state: dict[str, Any], vm: str, share: int) -> None:
        self.state = state
        if not state:
            state.update(
                vm=vm, share=share, ctx=None, next_ctx=1, next_handle=1, next_kernel=1,
                contexts={}, handles={}, kernels={},
            )  # fmt: skip
        # contexts: guest ctx -> [quota bytes or None, bytes allocated, last done ns, lane]
        # handles:  guest handle -> [guest ctx, host handle, bytes]
        # kernels:  guest kernel -> [guest ctx, host kernel, done ns or None]
        self.contexts: dict[int, list[Any]] = state["contexts"]
        self.handles: dict[int, list[Any]] = state["handles"]
        self.kernels: dict[int, list[Any]] = state["kernels"]
        #: guest ctx -> its kernels not known to have finished (an index of `kernels`)
        self.unfinished: dict[int, set[int]] = {}
        #: guest ctx -> why its latest launch was refused, until a sync reports it
        self.refused: dict[int, str] = {}
        for kernel, (ctx, _, done) in self.kernels.items():
            if done is None:
                self.unfinished.setdefault(ctx, set()).add(kernel)

    def take_id(self, kind: str) -> int:
        key = f"next_{kind}"
        value: int = self.state[key]
        self.state[key] = value + 1
        return value

    def context(self, ctx: int) -> list[Any]:
        entry = self.contexts.get(ctx)
        if entry is None:
            raise Refused("this request needs a context (from create_context)")
        return entry

    def handle(self, ctx: int, handle: Any) -> list[Any]:
        entry = self.handles.get(handle) if type(handle) is int else None
        if entry is None or entry[0] != ctx:
            raise Refused(f"handle {wire._short(handle)} is not this context's")
        return entry

    def kernel(self, ctx: int, kernel: Any) -> list[Any]:
        entry = self.kernels.get(kernel) if type(kernel) is int else None
        if entry is None or entry[0] != ctx:
            raise Refused(f"kernel {wire._short(kernel)} is not this context's")
        return entry

    def free_lane(self) -> int:
        """The lowest lane no live guest context uses.  Guest context c's
        stream s is host stream lane * STREAMS_PER_CONTEXT + s: one program
        after another reuses lane 0, so the host sees as many streams as the
        guest has contexts at once (and a context's share is split among
        those alone), while contexts at once still never share a stream."""
        used = {entry[3] for entry in self.contexts.values()}
        return next(lane for lane in range(len(used) + 1) if lane not in used)

    def running(self, ctx: int | None = None) -> tuple[int, ...]:
        """Guest kernels not known to have finished (of `ctx`, or all)."""
        if ctx is not None:
            return tuple(sorted(self.unfinished.get(ctx, ())))
        return tuple(sorted(k for kernels in self.unfinished.values() for k in kernels))

    def launched(self, ctx: int, kernel: int, host_kernel: int) -> None:
        self.kernels[kernel] = [ctx, host_kernel, None]
        self.unfinished.setdefault(ctx, set()).add(kernel)

    def finished(self, kernel: int, done_ns: int) -> None:
        entry = self.kernels[kernel]
        entry[2] = done_ns
        waiting = self.unfinished.get(entry[0])
        if waiting is not None:
            waiting.discard(kernel)
            if not waiting:
                del self.unfinished[entry[0]]

    def done_ns(self, kernels: tuple[int, ...], ctx: int) -> int | None:
        """When the last of `kernels` finished, or the context's last (None: none known)."""
        times = [self.kernels[k][2] for k in kernels]
        return max(times, default=self.contexts[ctx][2] if ctx in self.contexts else None)


def _host(cap: int, label: str, payload: Any = None):
    """One Call to the host's vGPU driver; its answer's Received, or Refused."""
    r = yield Call(cap, Message(label, payload))
    if r.msg.label == "error":
        raise Refused(str(r.msg.payload))
    return r


def _open_context(gpu: int, vm: VmGpu):
    """The VM's context on the host (the same ctx id again for a restored VM),
    with its share and, when restored, its allocations; returns its cap."""
    state = vm.state
    r = yield from _host(gpu, "create_context", ContextRequest(None, state["vm"], state["ctx"]))
    state["ctx"] = r.msg.payload
    cap = r.caps[0]
    if state["share"]:
        yield from _host(cap, "set_share", state["share"])
    for entry in vm.handles.values():  # a restored VM's buffers, anew
        entry[1] = (yield from _host(cap, "alloc", entry[2])).msg.payload
    now = yield GetTime()
    for kernel in vm.running():  # a snapshot waited for quiet: none should run
        vm.finished(kernel, now)
    return cap


def vgpu_backend(proc):
    """The back end of VM argv[0], whose vGPU share is argv[1] percent."""
    queue = yield MapDevice(proc.caps["queue"])
    vm = VmGpu(queue.state, proc.argv[0], int(proc.argv[1]) if len(proc.argv) > 1 else 0)
    ctx_cap = yield from _open_context(proc.caps["gpu"], vm)
    ep = yield NewEndpoint()
    yield BindNotification(proc.caps["kick"])
    back = yield Mint(ep, Rights.WRITE | Rights.GRANT, badge=1)
    for i in range(WORKERS):
        yield Spawn(
            _worker(queue, vm), caps={"ctx": ctx_cap, "back": back},
            name=f"vgpu-sync:{vm.state['vm']}:{i}",
        )  # fmt: skip
    idle: list[int] = []  # the reply objects parked workers wait on
    jobs: deque[SyncJob] = deque()
    reply = yield NewReply()
    while True:
        r = yield Recv(ep, reply)
        if r.msg.label == "notification":
            if r.badge & QUIESCE and vm.running():
                jobs.append(SyncJob(None, vm.running()))
            if r.badge & (KICK | QUIESCE):
                yield from _serve_ring(proc, ctx_cap, vm, queue, jobs)
        elif r.msg.label == "ready":  # a worker asks for work: it waits on this reply object
            idle.append(reply)
            reply = yield NewReply()
        while jobs and idle:
            yield Reply(idle.pop(), Message("job", jobs.popleft()))
        queue.quiet = not jobs and len(idle) == WORKERS and not vm.running()
        queue.quiet = queue.quiet and queue.device.outstanding == 0


def _serve_ring(proc, ctx_cap: int, vm: VmGpu, queue: Any, jobs: deque[SyncJob]):
    """Serve every chain the guest has published, in order.  (The guest
    kicks for what it publishes meanwhile: whether it need not, were the
    back end to say so, would hang on the host's timing, which a restored
    VM's back end does not repeat exactly.)"""
    for request in queue.requests():
        answer = yield from _serve(proc, ctx_cap, vm, request)
        if isinstance(answer, SyncJob):
            jobs.append(answer)
        else:  # a quiet request's answer raises no interrupt
            queue.complete(request, answer[0], not answer[1])


def _worker(queue: Any, vm: VmGpu):
    """A worker task of the back end: waits on the host for a job's kernels."""

    def worker(proc):
        ctx_cap = proc.caps["ctx"]
        while True:
            try:
                r = yield Call(proc.caps["back"], Message("ready"))
            except SyscallError:  # the dispatcher is gone (its VM was destroyed)
                yield Exit(0)
            job: SyncJob = r.msg.payload
            answer = yield from _wait(ctx_cap, vm, job)
            if job.request is not None:
                queue.complete(job.request, answer)

    return worker


def _wait(ctx_cap: int, vm: VmGpu, job: SyncJob):
    """Sync a job's kernels on the host; the answer for the guest."""
    try:
        for kernel in job.kernels:
            entry = vm.kernels[kernel]
            if entry[2] is None:
                vm.finished(kernel, (yield from _host(ctx_cap, "sync", entry[1])).msg.payload)
        if job.then == "destroy":
            yield from _destroy(ctx_cap, vm, job.ctx)
            return wire.encode("ok", None)
    except Refused as exc:
        return wire.encode("error", str(exc))
    done = vm.done_ns(job.kernels, job.ctx)
    if job.ctx in vm.contexts:
        vm.contexts[job.ctx][2] = max(done or 0, vm.contexts[job.ctx][2] or 0)
    if done is None:
        done = yield GetTime()
    return wire.encode("done", done)


def _destroy(ctx_cap: int, vm: VmGpu, ctx: int):
    """Free a guest context's buffers on the host and forget it."""
    for handle, entry in list(vm.handles.items()):
        if entry[0] == ctx:
            yield from _host(ctx_cap, "free", entry[1])
            del vm.handles[handle]
    for kernel in [k for k, entry in vm.kernels.items() if entry[0] == ctx]:
        del vm.kernels[kernel]
    vm.unfinished.pop(ctx, None)
    vm.refused.pop(ctx, None)
    vm.contexts.pop(ctx, None)


def _serve(proc, ctx_cap: int, vm: VmGpu, request: Any):
    """Serve one guest request: (the answer bytes, quiet), or a `SyncJob` for a worker."""
    quiet = False
    try:
        op, ctx, arg, spec, quiet = wire.decode_request(request.data)
        answer = yield from _answer(proc, ctx_cap, vm, request, op, ctx, arg, spec)
    except (wire.WireError, Refused) as exc:
        answer = wire.encode("error", str(exc))
    return answer if isinstance(answer, SyncJob) else (answer, quiet)


def _answer(proc, ctx_cap: int, vm: VmGpu, request: Any, op: str, ctx: int, arg: Any, spec: Any):
    """What a decoded request is answered: bytes, or a `SyncJob`; Refused."""
    if op == "create_context":
        if arg is not None and not 0 <= arg <= wire.MAX_BYTES:
            raise Refused(f"a quota is bytes or None, got {wire._short(arg)}")
        new = vm.take_id("ctx")
        vm.contexts[new] = [arg, 0, None, vm.free_lane()]
        return wire.encode("context", new)
    if op == "stats":
        view = (yield from _host(proc.caps["gpu"], "stats")).msg.payload
        return wire.encode("stats", _vm_view(vm, view))
    entry = vm.context(ctx)
    if op == "alloc":
        nbytes = wire.check_bytes("an allocation", arg)
        if entry[0] is not None and entry[1] + nbytes > entry[0]:
            raise Refused(f"alloc of {nbytes} bytes is over the context's quota {entry[0]}")
        host_handle = (yield from _host(ctx_cap, "alloc", nbytes)).msg.payload
        handle = vm.take_id("handle")
        vm.handles[handle] = [ctx, host_handle, nbytes]
        entry[1] += nbytes
        return wire.encode("handle", handle)
    if op == "free":
        _, host_handle, nbytes = vm.handle(ctx, arg)
        yield from _host(ctx_cap, "free", host_handle)
        del vm.handles[arg]
        entry[1] -= nbytes
        return wire.encode("ok", None)
    if op == "launch":
        assert spec is not None  # (decode_request gives a launch its spec)
        first = vm.state["next_kernel"]
        if arg is None or not first <= arg <= wire.MAX_ID:
            raise Refused(f"a launch names a new kernel id, {first} or above, got {arg}")
        vm.state["next_kernel"] = arg + 1
        host_spec = attrs.evolve(spec, stream=entry[3] * STREAMS_PER_CONTEXT + spec.stream)
        try:
            host_kernel = (yield from _host(ctx_cap, "launch", host_spec)).msg.payload
        except Refused as exc:
            vm.refused[ctx] = f"the launch of kernel {arg} was refused: {exc}"
            raise
        vm.launched(ctx, arg, host_kernel)
        return wire.encode("launched", arg)
    if op == "sync":
        reason = vm.refused.pop(ctx, None)
        if reason is not None:
            raise Refused(reason)
        kernels = vm.running(ctx) if arg is None else (arg,)
        if arg is not None:
            vm.kernel(ctx, arg)
        if not (yield from _poll(ctx_cap, vm, kernels)):
            return SyncJob(request, kernels, ctx=ctx)
        done = vm.done_ns(kernels, ctx)
        return wire.encode("done", done if done is not None else (yield GetTime()))
    # destroy: its kernels are waited for first, so no work outlives it
    return SyncJob(request, vm.running(ctx), "destroy", ctx)


def _poll(ctx_cap: int, vm: VmGpu, kernels: tuple[int, ...]):
    """Note which of `kernels` the host has finished, without waiting;
    True when all have (the sync is answered at once, with no worker)."""
    for kernel in kernels:
        entry = vm.kernels[kernel]
        if entry[2] is not None:
            continue
        r = yield from _host(ctx_cap, "poll", entry[1])
        if r.msg.label != "done":
            return False
        vm.finished(kernel, r.msg.payload)
    return True


def _vm_view(vm: VmGpu, view: GpuView) -> dict[str, Any]:
    """What the guest may see of the host's `gpu`: the device's figures and
    its own context's, never another VM's."""
    own = next((c for c in view.contexts if c.ctx == vm.state["ctx"]), None)
    s = view.stats
    share = vm.state["share"]
    return {
        "preset": view.preset,
        "n_tpcs": view.n_tpcs,
        "memory_bytes": view.memory_bytes,
        "policy": view.policy,
        "share": share,
        "now_ns": s.now_ns,
        "clock_mhz": s.clock_mhz,
        "tpcs": own.tpcs if own is not None else 0,
        "kernels_done": own.kernels_done if own is not None else 0,
        "contexts": [
            [ctx, entry[1], len(vm.running(ctx)), _finished(vm, ctx)]
            for ctx, entry in vm.contexts.items()
        ],
    }


def _finished(vm: VmGpu, ctx: int) -> int:
    return sum(1 for c, _, done in vm.kernels.values() if c == ctx and done is not None)

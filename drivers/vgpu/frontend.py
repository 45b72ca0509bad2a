"""A guest's GPU driver: the vGPU server's protocol, remoted to the host (`drivers/vgpu`).

In a guest with a vGPU share the boot plan's `gpu` server is `vgpu-front`
(kernel/hypervisor/vm.py, `guest_plan`), so programs find `proc.caps["gpu"]`
as on bare metal and speak the protocol of server.py to it: gpu-burn and
userland.gpulib run unchanged.  The front end owns no device.  It forwards
each request over the GPU virtqueue (LAKE-style API remoting) to the host's
back end (backend.py), which serves it on the VM's one host context:

    program --Call--> vgpu-front --virtqueue + GPU_SUBMIT--> vgpu-backend --Call--> host vGPU

Contexts are the front end's own: `create_context` mints a context cap with
the guest context's id as its badge, exactly as server.py does, and every
request through it names that guest context to the back end.  A caller
stays parked on its reply object (as server.py's `_Park`) until the used
entry with its answer comes back; the queue's interrupt is bound to the
front end, so its Recv wakes for answers as for requests.

A context whose program died without destroying it is reclaimed (its
buffers freed on the host) when the next context is created.

Each request has a buffer slot of its own in the guest's buffer space: the
request (wire.py's binary record) is written at the slot's start and the
answer is written after it.

Launches are asynchronous, as CUDA's are: the front end checks the spec,
names the kernel itself (ids ascend per VM; the back end refuses any other),
answers the program `launched` at once and publishes the launch without
parking anyone.  A launch the host refuses is reported by the context's next
`sync` (the back end keeps the reason), as CUDA reports a launch's error at
the next synchronisation.

Batching.  The front end takes every request already waiting on its
endpoint (NBRecv) before it kicks, so the chains published meanwhile go to
the host with ONE kick (and the back end takes every chain published by
the time it serves, so kicks that come together cost it one wake).  A
launch is published *quiet* (wire.QUIET): its answer raises no interrupt,
and is collected with the next answer that does.  Callers are answered
after the kick, the last of them with the front end's next wait
(ReplyRecv), which hands its vCPU straight to that caller: a launch + sync
loop costs the guest one vCPU grant per round trip, not three.  The last free slot never takes a quiet launch, so while a request
waits for a slot (`backlog`) some chain in flight will interrupt.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs

from drivers.vgpu import wire
from drivers.vgpu.api import GpuStats
from drivers.vgpu.server import ContextView, GpuView, LaunchSpec
from kernel.caps import Rights
from kernel.errors import SyscallError
from kernel.hypervisor.hypercall import Hc
from kernel.hypervisor.virtqueue import STATUS_OK, Driver
from kernel.traps import (
    BindNotification,
    Delete,
    Derived,
    Hypercall,
    Log,
    MapDevice,
    Message,
    Mint,
    NBRecv,
    NewReply,
    Recv,
    Reply,
    ReplyRecv,
    Revoke,
)

_I64 = (-(1 << 63), (1 << 63) - 1)  # what a request's argument holds
SLOT_BYTES = 16 * 1024  # one request's buffers: the request, then its answer
REQUEST_BYTES = 4 * 1024

# The guest's labels the front end forwards, and the op each becomes.
_CONTEXT_OPS = ("alloc", "free", "launch", "sync", "destroy")


@attrs.frozen
class _Waiter:
    """A caller parked until the answer to its request comes back."""

    reply: int | None  # its reply object (None: nobody parked: a launch, a reap)
    op: str
    slot: int  # its buffer slot
    ctx: int  # the guest context the request names (0: none)


class FrontEnd:
    """The front end's state: the queue's driver half, slots and parked callers."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self.ring = Driver(queue.memory, queue.layout)
        base, nbytes = queue.buffers
        self.free_slots = [base + SLOT_BYTES * i for i in range(nbytes // SLOT_BYTES)][::-1]
        self.free_slots = self.free_slots[: queue.layout.size // 2]  # two descriptors a chain
        self.waiting: dict[int, _Waiter] = {}  # head -> parked caller
        self.backlog: deque[tuple[bytes, int | None, str, int]] = deque()  # no slot yet
        self.caps: dict[int, int] = {}  # guest ctx -> its minted cap slot
        self.unkicked = False  # chains published since the last kick
        self.next_kernel = 1  # the id the next launch gets (the back end's ids ascend)

    def publish(self, data: bytes, reply: int | None, op: str, ctx: int) -> bool:
        """Put a request on the ring; False when it waits for a free slot."""
        if not self.free_slots:
            self.backlog.append((data, reply, op, ctx))
            return False
        self.unkicked = True
        slot = self.free_slots.pop()
        self.queue.memory.write(slot, data)
        head = self.ring.add(
            [(slot, len(data))], [(slot + REQUEST_BYTES, SLOT_BYTES - REQUEST_BYTES)]
        )
        self.waiting[head] = _Waiter(reply, op, slot, ctx)
        return True

    def answers(self) -> list[tuple[_Waiter, str, Any]]:
        """The (caller, label, payload) of every answer the host pushed."""
        out = []
        for head, length in self.ring.used():
            waiter = self.waiting.pop(head, None)
            if waiter is None:
                continue
            self.free_slots.append(waiter.slot)
            if waiter.reply is None and waiter.op == "launch":
                continue  # answered already; a refusal comes with the next sync
            out.append((waiter, *self._read(waiter.slot + REQUEST_BYTES, length)))
        return out

    def launch(self, ctx: int, spec: LaunchSpec) -> int:
        """Publish a launch under a kernel id of the front end's; the id.
        It is quiet unless it takes the last free slot."""
        kernel = self.next_kernel
        self.next_kernel += 1
        quiet = len(self.free_slots) > 1
        data = wire.encode_request("launch", ctx, kernel, spec, quiet=quiet)
        self.publish(data, None, "launch", ctx)
        return kernel

    def _read(self, addr: int, length: int) -> tuple[str, Any]:
        if length < 1:
            return "error", "the host refused the request"
        data = self.queue.memory.read(addr, min(length, SLOT_BYTES - REQUEST_BYTES))
        if data[0] != STATUS_OK:
            return "error", f"the host could not answer (status {data[0]})"
        try:
            label, payload = wire.decode(data[1:])
        except (wire.WireError, ValueError):
            return "error", "the host's answer is undecodable"
        return label, payload


def vgpu_front(proc):
    """The guest's `gpu` server: remotes the vGPU protocol to the host."""
    ep = proc.caps["endpoint"]
    queue = yield MapDevice(proc.caps["gpuq"])
    front = FrontEnd(queue)
    yield BindNotification(proc.caps["gpuq"])  # the queue's interrupt wakes our Recv
    reply = yield NewReply()  # the reply object the next caller is bound to
    spare: list[int] = []
    last: tuple[int, Message] | None = None  # the answer given with the next wait
    while True:
        if last is None:
            r = yield Recv(ep, reply)
        else:  # answer and wait in one trap: the CPU goes straight to the caller
            spare.append(reply)
            reply, msg = last
            r = yield ReplyRecv(ep, reply, msg)
        due: list[tuple[int, Message]] = []  # (reply object, answer) of callers to answer
        while r is not None:  # every request waiting now goes with one kick
            if r.msg.label != "notification":
                request = _request(r)
                if isinstance(request, Message):  # refused here, as server.py would
                    due.append((reply, request))
                elif request[0] == "launch":  # answered without waiting for the host
                    due.append((reply, Message("launched", front.launch(*request[1:]))))
                else:
                    op, ctx, arg = request
                    if op == "create_context":  # a new context: first reclaim the abandoned
                        yield from _reap(front)
                    front.publish(wire.encode_request(op, ctx, arg), reply, op, ctx)
                reply = spare.pop() if spare else (yield NewReply())
            r = yield NBRecv(ep, reply)
        for waiter, label, payload in front.answers():
            answer = yield from _answer(front, ep, waiter, label, payload)
            if waiter.reply is not None:
                due.append((waiter.reply, answer))
        while front.backlog and front.free_slots:
            front.publish(*front.backlog.popleft())
        if front.unkicked:  # kicked before anyone is answered: the host starts first
            front.unkicked = False
            yield Hypercall(int(Hc.GPU_SUBMIT), (queue.queue,))
        last = due.pop() if due else None
        for obj, msg in due:
            try:
                yield Reply(obj, msg)
            except SyscallError:  # the caller was killed while it waited
                pass
            spare.append(obj)


def _reap(front: FrontEnd):
    """Destroy the guest contexts nobody holds a cap to any more (their program
    exited or was killed without destroying them), as server.py reaps; it is
    done when a context is created, so the request path pays nothing for it.
    The destroys are published here and kicked with the request that follows."""
    for ctx, slot in list(front.caps.items()):
        if (yield Derived(slot)) == 0:
            front.caps.pop(ctx)
            yield Delete(slot)
            front.publish(wire.encode_request("destroy", ctx), None, "destroy", ctx)
            yield Log("context reclaimed", (("ctx", ctx), ("reason", "no holder")))


def _request(r) -> tuple[str, int, Any] | Message:
    """A caller's message as (op, guest ctx, argument), or the error to answer."""
    label, payload = r.msg.label, r.msg.payload
    if label == "create_context":  # a quota, or None (a ContextRequest: none)
        quota = payload if isinstance(payload, int) else None
        if quota is not None and not _I64[0] <= quota <= _I64[1]:
            return Message("error", f"a quota is bytes or None, got {wire._short(quota)}")
        return label, 0, None if quota is None else int(quota)
    if label == "stats":
        return label, 0, None
    if label not in _CONTEXT_OPS:
        return Message("error", f"unknown request {label!r}")
    if r.badge == 0:
        return Message("error", "this request needs a context cap (from create_context)")
    if label == "launch":
        try:
            payload = wire.check_launch(payload)
        except wire.WireError as exc:
            return Message("error", str(exc))
    elif label in ("alloc", "free", "sync"):  # the back end checks the value
        if payload is not None and (type(payload) is not int or not _I64[0] <= payload <= _I64[1]):
            return Message("error", f"{label} needs a number, got {wire._short(payload)}")
    else:
        payload = None
    return label, r.badge, payload


def _answer(front: FrontEnd, ep: int, waiter: _Waiter, label: str, payload: Any):
    """The Message a parked caller gets for the back end's answer."""
    if label == "error":
        return Message("error", str(payload))
    if waiter.op == "create_context":
        slot = yield Mint(ep, Rights.WRITE | Rights.GRANT, badge=payload)
        front.caps[payload] = slot
        return Message("context", payload, caps=(slot,))
    if waiter.op == "destroy" and waiter.ctx in front.caps:
        yield Revoke(front.caps.pop(waiter.ctx))
    if waiter.op == "stats":
        return Message("stats", _guest_view(payload))
    return Message(label, payload)


def _guest_view(vm: dict[str, Any]) -> GpuView:
    """The guest's `gpu`: its share of the device, and its own contexts only."""
    tpcs = max(1, round(vm["n_tpcs"] * vm["share"] / 100)) if vm["share"] else vm["n_tpcs"]
    used = sum(c[1] for c in vm["contexts"])
    busy = min(tpcs, vm["tpcs"])
    stats = GpuStats(
        now_ns=vm["now_ns"], clock_mhz=vm["clock_mhz"], pending_clocks=(), power_w=0.0,
        energy_j=0.0, busy_tpcs=busy, running_blocks=0,
        tpc_occupancy=tuple(1.0 if i < busy else 0.0 for i in range(tpcs)),
        bandwidth_demand_gbps=0.0, blocks_dispatched=0, blocks_completed=0, atoms_launched=0,
        atoms_completed=0, kernels_completed=vm["kernels_done"], memory_used_bytes=used,
    )  # fmt: skip
    contexts = tuple(
        ContextView(ctx, "program", nbytes, queued, done, 0, vm["share"])
        for ctx, nbytes, queued, done in vm["contexts"]
    )
    return GpuView(
        vm["preset"], tpcs, vm["memory_bytes"], stats, contexts,
        f"{vm['policy']} (vGPU share {vm['share']}%)",
    )  # fmt: skip

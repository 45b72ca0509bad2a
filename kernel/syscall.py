"""The trap table: one handler per trap type.  This file is the syscall surface.

A handler is ``handler(kernel, task, trap)``.  It returns the trap's result,
or `BLOCK` after parking the task; a blocked task is later woken with a value
or an exception by `Kernel.wake`.  A handler signals failure by raising a
`SyscallError`, which the kernel throws into the calling task.  Handlers
validate every argument before they change any state, so a failing trap
leaves the kernel exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kernel import traps as T
from kernel.caps import Capability, Rights, descendants, revoke
from kernel.errors import (
    CapabilityError,
    InvalidArgument,
    NoSuchTask,
    NotSupported,
    OutOfMemory,
    PeerDied,
    SyscallError,
    WouldBlock,
)
from kernel.ipc import Endpoint, Notification, ReplyObject
from kernel.memory import MAX_ACCESS_BYTES, AddressSpace
from kernel.task import State, Task
from kernel.text import KERNEL_FIELDS, MAX_FIELDS, value_text

if TYPE_CHECKING:
    from kernel.kernel import Kernel

BLOCK = object()  # a handler's answer meaning "the task is now blocked"

# The badge that marks a reply cap from NewReply: reusable, never consumed.
# (Kernel-made reply caps, one per Call, carry badge 0 and are consumed.)
REUSABLE = 1

Handler = Callable[["Kernel", Task, Any], Any]

# What one task can make the kernel hold.  No trap allocates without bound:
# memory is bounded by frames, swap and KernelConfig.task_pages (memory.py);
# these bound the rest.  Each refusal is a SyscallError with the limit in it.
MAX_TASKS = 1024  # live tasks a Spawn trap may bring the kernel to
MAX_CAPS = 1024  # caps in one task's cspace (kernel-made reply caps, one per caller, aside)
MAX_ALARMS = 1024  # Alarm traps of one task not yet fired (a driver re-arms sooner ones)
MAX_ARGS = 256  # arguments of a Spawn
MAX_TEXT = 4096  # characters of one argument, task or log name, or log value
MAX_LOG_FIELDS = MAX_FIELDS  # fields of one Log trap: a module's record's limit
MAX_DURATION_US = (1 << 62) // 1000  # one Compute, Sleep or Alarm: about 146 years
# Fields the kernel sets on every log record; a task cannot set them.
RESERVED_LOG_FIELDS = KERNEL_FIELDS


# -- IPC helpers -----------------------------------------------------------------------


def _check_msg(msg: Any) -> T.Message:
    if not isinstance(msg, T.Message):
        raise InvalidArgument(f"expected a Message, got {type(msg).__name__}")
    return msg


def _sender_caps(task: Task, cap: Capability, msg: T.Message) -> list[Capability]:
    if not msg.caps:
        return []
    if not cap.rights & Rights.GRANT:
        raise InvalidArgument("the endpoint cap has no grant right: cannot transfer caps")
    if len(msg.caps) > T.MAX_MSG_CAPS:
        raise InvalidArgument(
            f"a message transfers at most {T.MAX_MSG_CAPS} caps, not {len(msg.caps)}"
        )
    return [task.cspace.lookup(slot) for slot in msg.caps]


def _check_room(task: Task) -> None:
    """A trap that gives the task a new cap checks first that it has room for it."""
    if len(task.cspace.slots) >= MAX_CAPS:
        raise OutOfMemory(f"a task holds at most {MAX_CAPS} caps; delete some first")


def _deliver(
    k: Kernel,
    receiver: Task,
    msg: T.Message,
    badge: int,
    caller: Task | None,
    caps: list[Capability],
    reply: int | None = None,
) -> T.Received:
    """Build what the receiver's Recv returns: transferred caps land in its
    cspace, and a caller is bound to the reply object `reply` (or a new one).
    Caps that do not fit under MAX_CAPS are not transferred (as seL4 does with
    extra caps): the receiver sees fewer slots in `caps`."""
    new_slots: tuple[int, ...] = ()
    if caps:
        cspace = receiver.cspace
        room = MAX_CAPS - len(cspace.slots)
        live = [c for c in caps if c.cspace is not None][: max(room, 0)]
        new_slots = tuple(cspace.insert(c.derive()) for c in live)
    if caller is None:
        return T.Received(msg, badge, None, new_slots)
    if reply is None:
        reply = receiver.cspace.insert(Capability(ReplyObject(None), Rights.WRITE | Rights.GRANT))
    obj: ReplyObject = receiver.cspace.slots[reply].obj
    if obj.caller is not None:
        # MCS semantics: re-binding a reply object drops its unanswered caller,
        # who gets an error rather than waiting forever.
        k.strand([obj.caller])
    obj.caller = caller
    obj.used = False
    caller.blocked_on = obj
    return T.Received(msg, badge, reply, new_slots)


def _send(
    k: Kernel, task: Task, ep_slot: int, msg: T.Message, is_call: bool, blocking: bool
) -> Any:
    cap = task.cspace.lookup(ep_slot, Rights.WRITE, Endpoint)
    if type(msg) is not T.Message:
        msg = _check_msg(msg)
    caps = _sender_caps(task, cap, msg) if msg.caps else []
    ep: Endpoint = cap.obj
    if ep.receivers:
        receiver = ep.receivers.popleft()
        received = _deliver(
            k, receiver, msg, cap.badge, task if is_call else None, caps, receiver.blocked_reply
        )
        if is_call:
            # seL4 fastpath: the caller blocks, so its CPU runs the receiver at once.
            k.block(task, State.REPLY, task.blocked_on)
            k.handoff(task, receiver, received)
            return BLOCK
        k.wake(receiver, received)
        return None
    if not blocking:
        raise WouldBlock("no receiver is waiting on the endpoint")
    if ep.readers == 0:
        raise PeerDied("nobody holds a cap to receive on this endpoint")
    ep.senders.append((task, msg, cap.badge, is_call, caps))
    k.block(task, State.SEND, ep)
    return BLOCK


def _recv(k: Kernel, task: Task, cap: Capability, reply: int | None, blocking: bool) -> Any:
    """Receive on the endpoint named by the (already checked) `cap`."""
    ntfn = task.bound_ntfn
    if ntfn is not None and ntfn.word:
        word, ntfn.word = ntfn.word, 0
        return T.Received(T.Message("notification"), word)
    ep: Endpoint = cap.obj
    if ep.senders:
        sender, msg, badge, is_call, caps = ep.senders.popleft()
        received = _deliver(k, task, msg, badge, sender if is_call else None, caps, reply)
        if is_call:
            sender.state = State.REPLY  # still blocked, now on the reply object
        else:
            k.wake(sender, None)
        return received
    if not blocking:
        return None
    ep.receivers.append(task)
    task.blocked_reply = reply
    k.block(task, State.RECV, ep)
    return BLOCK


def _reply(k: Kernel, task: Task, cap: Capability, msg: T.Message) -> Task | None:
    """Answer the caller bound to the reply object of the (checked) `cap`.
    Returns the caller to wake (None if it died).  A reply cap the kernel
    made for one Call is consumed; one from NewReply is kept for reuse."""
    msg = _check_msg(msg)
    caps = _sender_caps(task, cap, msg) if msg.caps else []
    obj: ReplyObject = cap.obj
    caller, obj.caller, obj.used = obj.caller, None, True
    if cap.badge != REUSABLE:
        task.cspace.delete(cap.slot)
    if caller is None or caller.state is State.DEAD or caller.state is not State.REPLY:
        return None
    caller.resume_value = _deliver(k, caller, msg, 0, None, caps)
    return caller


# -- IPC traps -----------------------------------------------------------------------------


def trap_send(k: Kernel, task: Task, trap: T.Send) -> Any:
    return _send(k, task, trap.ep, trap.msg, is_call=False, blocking=True)


def trap_nbsend(k: Kernel, task: Task, trap: T.NBSend) -> Any:
    return _send(k, task, trap.ep, trap.msg, is_call=False, blocking=False)


def trap_call(k: Kernel, task: Task, trap: T.Call) -> Any:
    return _send(k, task, trap.ep, trap.msg, is_call=True, blocking=True)


def _recv_trap(k: Kernel, task: Task, ep: int, reply: int | None, blocking: bool) -> Any:
    cap = task.cspace.lookup(ep, Rights.READ, Endpoint)
    if reply is not None:
        task.cspace.lookup(reply, Rights.WRITE, ReplyObject)
    return _recv(k, task, cap, reply, blocking)


def trap_recv(k: Kernel, task: Task, trap: T.Recv) -> Any:
    return _recv_trap(k, task, trap.ep, trap.reply, blocking=True)


def trap_nbrecv(k: Kernel, task: Task, trap: T.NBRecv) -> Any:
    return _recv_trap(k, task, trap.ep, trap.reply, blocking=False)


def trap_reply(k: Kernel, task: Task, trap: T.Reply) -> Any:
    cap = task.cspace.lookup(trap.reply, Rights.WRITE, ReplyObject)
    if cap.obj.caller is None:
        # Each Call is answered once: a reply object answered already (or
        # never bound) has nobody to answer.  ReplyRecv skips its reply part
        # instead, so a server loop may start with it.
        raise CapabilityError("the reply object has no caller to answer")
    caller = _reply(k, task, cap, trap.msg)
    if caller is not None:
        k.wake(caller, caller.resume_value)
    return None


def trap_replyrecv(k: Kernel, task: Task, trap: T.ReplyRecv) -> Any:
    # Check both caps before changing anything, so a bad trap changes nothing.
    cspace = task.cspace
    ep_cap = cspace.lookup(trap.ep, Rights.READ, Endpoint)
    reply_cap = cspace.lookup(trap.reply, Rights.WRITE, ReplyObject)
    caller = _reply(k, task, reply_cap, trap.msg)
    result = _recv(
        k, task, ep_cap, trap.reply if reply_cap.badge == REUSABLE else None, blocking=True
    )
    if caller is not None:
        if result is BLOCK:
            k.handoff(task, caller, caller.resume_value)  # fastpath back to the client
        else:
            k.wake(caller, caller.resume_value)
    return result


def trap_yield(k: Kernel, task: Task, trap: T.Yield) -> Any:
    k.preempt(task)
    return None


# -- notifications -------------------------------------------------------------------------


def trap_signal(k: Kernel, task: Task, trap: T.Signal) -> Any:
    cap = task.cspace.lookup(trap.ntfn, Rights.WRITE, Notification)
    k.signal(cap.obj, cap.badge or 1)
    return None


def trap_wait(k: Kernel, task: Task, trap: T.Wait) -> Any:
    ntfn: Notification = task.cspace.lookup(trap.ntfn, Rights.READ, Notification).obj
    if ntfn.word:
        word, ntfn.word = ntfn.word, 0
        return word
    ntfn.waiters.append(task)
    k.block(task, State.NOTIFY, ntfn)
    return BLOCK


def trap_poll(k: Kernel, task: Task, trap: T.Poll) -> Any:
    ntfn: Notification = task.cspace.lookup(trap.ntfn, Rights.READ, Notification).obj
    word, ntfn.word = ntfn.word, 0
    return word


def trap_bindnotification(k: Kernel, task: Task, trap: T.BindNotification) -> Any:
    cap = task.cspace.lookup(trap.ntfn, Rights.READ)
    # A device cap binds the device's interrupt (its `irq` notification), as
    # seL4 binds an IRQ handler to a notification.
    ntfn = getattr(cap.obj, "irq", None) if not isinstance(cap.obj, Notification) else cap.obj
    if not isinstance(ntfn, Notification):
        raise InvalidArgument("the cap names neither a notification nor a device with an interrupt")
    if ntfn.bound is not None and ntfn.bound is not task and ntfn.bound.alive:
        raise InvalidArgument("the notification is bound to another task")
    ntfn.bound = task
    task.bound_ntfn = ntfn
    return None


# -- objects and caps ------------------------------------------------------------------------


def trap_newendpoint(k: Kernel, task: Task, trap: T.NewEndpoint) -> Any:
    _check_room(task)
    return task.cspace.insert(Capability(Endpoint(), Rights.ALL))


def trap_newnotification(k: Kernel, task: Task, trap: T.NewNotification) -> Any:
    _check_room(task)
    return task.cspace.insert(Capability(Notification(), Rights.ALL))


def trap_newreply(k: Kernel, task: Task, trap: T.NewReply) -> Any:
    _check_room(task)
    return task.cspace.insert(
        Capability(ReplyObject(None), Rights.WRITE | Rights.GRANT, badge=REUSABLE)
    )


def _check_rights(rights: Any) -> int:
    if not Rights.valid(rights):
        raise InvalidArgument(f"rights must be an int of Rights bits (0..7), got {rights!r}")
    return rights


def trap_mint(k: Kernel, task: Task, trap: T.Mint) -> Any:
    cap = task.cspace.lookup(trap.cap)
    rights = _check_rights(trap.rights)
    if not isinstance(trap.badge, int) or trap.badge < 0 or trap.badge >= 1 << 64:
        raise InvalidArgument(f"a badge is a 64-bit word, got {trap.badge!r}")
    if cap.badge:
        raise InvalidArgument("a badged cap cannot be re-badged; copy it instead")
    _check_room(task)  # before derive() links a child into the tree
    return task.cspace.insert(cap.derive(rights, trap.badge))


def trap_copy(k: Kernel, task: Task, trap: T.Copy) -> Any:
    cap = task.cspace.lookup(trap.cap)
    rights = None if trap.rights is None else _check_rights(trap.rights)
    _check_room(task)  # before derive() links a child into the tree
    return task.cspace.insert(cap.derive(rights))


def trap_revoke(k: Kernel, task: Task, trap: T.Revoke) -> Any:
    cap = task.cspace.lookup(trap.cap)
    k.strand(revoke(cap))
    return None


def trap_derived(k: Kernel, task: Task, trap: T.Derived) -> Any:
    return descendants(task.cspace.lookup(trap.cap))


def trap_delete(k: Kernel, task: Task, trap: T.Delete) -> Any:
    k.strand(task.cspace.delete(trap.cap))
    return None


# -- CPU and time ----------------------------------------------------------------------------


def _duration_ns(us: Any, what: str) -> int:
    # Compared before it is scaled: a float near its maximum would scale to infinity.
    if isinstance(us, bool) or not isinstance(us, (int, float)) or not 0 <= us <= MAX_DURATION_US:
        raise InvalidArgument(
            f"{what} needs a number of microseconds from 0 to {MAX_DURATION_US}, got {us!r}"
        )
    return int(us * 1000)


def trap_compute(k: Kernel, task: Task, trap: T.Compute) -> Any:
    task.compute_left_ns = _duration_ns(trap.us, "Compute")
    return None


def trap_sleep(k: Kernel, task: Task, trap: T.Sleep) -> Any:
    k.sleep(task, _duration_ns(trap.us, "Sleep"), None)
    return BLOCK


def trap_gettime(k: Kernel, task: Task, trap: T.GetTime) -> Any:
    return k.loop.now_ns


def trap_alarm(k: Kernel, task: Task, trap: T.Alarm) -> Any:
    cap = task.cspace.lookup(trap.ntfn, Rights.WRITE, Notification)
    delay_ns = _duration_ns(trap.us, "Alarm")
    if task.alarms >= MAX_ALARMS:  # each is an event on the heap until it fires
        raise WouldBlock(f"a task has at most {MAX_ALARMS} alarms pending; wait for one")
    task.alarms += 1
    k.loop.call_later(delay_ns, _alarm_due, (k, task, cap.obj, cap.badge or 1), owner=k)
    return None


def _alarm_due(arg: tuple[Kernel, Task, Notification, int]) -> None:
    k, task, ntfn, badge = arg
    task.alarms -= 1
    k.alarm_fired((ntfn, badge))


# -- tasks ---------------------------------------------------------------------------------------


def trap_spawn(k: Kernel, task: Task, trap: T.Spawn) -> Any:
    if len(k.tasks) >= MAX_TASKS:
        raise WouldBlock(f"the kernel runs at most {MAX_TASKS} tasks; wait for one to exit")
    if len(trap.args) > MAX_ARGS or not all(_is_text(a) for a in trap.args):
        raise InvalidArgument(
            f"Spawn takes at most {MAX_ARGS} arguments, each a string of at most {MAX_TEXT} characters"
        )
    if not (trap.name is None or _is_text(trap.name)):
        raise InvalidArgument(f"a task name is a string of at most {MAX_TEXT} characters")
    if len(trap.caps) > MAX_CAPS or not all(_is_text(name) for name, _ in trap.caps):
        raise InvalidArgument(f"Spawn hands at most {MAX_CAPS} caps, each named by a string")
    caps = {name: task.cspace.lookup(slot) for name, slot in trap.caps}
    return k.spawn(trap.program, trap.args, caps=caps, name=trap.name, parent=task.pid)


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_TEXT


def trap_waitpid(k: Kernel, task: Task, trap: T.WaitPid) -> Any:
    if trap.pid in k.exit_codes:
        return k.exit_codes.pop(trap.pid)
    child = k.tasks.get(trap.pid)
    if child is None:
        raise NoSuchTask(f"no task with pid {trap.pid}")
    if child is task:
        raise InvalidArgument("a task cannot wait for itself")
    if trap.nohang:
        return None
    child.exit_waiters.append(task)
    k.block(task, State.CHILD, child)
    return BLOCK


def trap_kill(k: Kernel, task: Task, trap: T.Kill) -> Any:
    target = k.tasks.get(trap.pid)
    if target is None:
        raise NoSuchTask(f"no task with pid {trap.pid}")
    k.kill(target, f"signal {trap.signal} from pid {task.pid}", T.SIGNALS[trap.signal])
    return BLOCK if target is task else None


def trap_exit(k: Kernel, task: Task, trap: T.Exit) -> Any:
    code = trap.code if isinstance(trap.code, int) else 0
    k.exit(task, code)
    return BLOCK


def trap_getpid(k: Kernel, task: Task, trap: T.GetPid) -> Any:
    return task.pid


def trap_poweroff(k: Kernel, task: Task, trap: T.Poweroff) -> Any:
    k.halt(f"poweroff by {task.name} (pid {task.pid})")
    return BLOCK


# -- memory ----------------------------------------------------------------------------------------


def _aspace(k: Kernel, task: Task) -> AddressSpace:
    if task.aspace is None:
        task.aspace = AddressSpace(task.pid, k.config.task_pages)
    return task.aspace


def trap_memmap(k: Kernel, task: Task, trap: T.MemMap) -> Any:
    return k.mm.map(_aspace(k, task), trap.pages)


def _after_io(k: Kernel, task: Task, result: Any, io_ns: int) -> Any:
    if io_ns <= 0:
        return result
    k.sleep(task, io_ns, result)  # the CPU is free while the pager waits on the device
    return BLOCK


def trap_memwrite(k: Kernel, task: Task, trap: T.MemWrite) -> Any:
    if not isinstance(trap.data, (bytes, bytearray, memoryview)):
        raise InvalidArgument("MemWrite data must be bytes")
    size = memoryview(trap.data).nbytes
    if size > MAX_ACCESS_BYTES:  # before the kernel copies it
        raise InvalidArgument(f"one MemWrite moves at most {MAX_ACCESS_BYTES} bytes, not {size}")
    _, io_ns = k.mm.access(_aspace(k, task), trap.addr, size, bytes(trap.data))
    return _after_io(k, task, None, io_ns)


def trap_memread(k: Kernel, task: Task, trap: T.MemRead) -> Any:
    if type(trap.size) is not int:
        raise InvalidArgument("MemRead size must be an int")
    data, io_ns = k.mm.access(_aspace(k, task), trap.addr, trap.size)
    return _after_io(k, task, data, io_ns)


# -- devices and kernel information -----------------------------------------------------------------


def trap_mapdevice(k: Kernel, task: Task, trap: T.MapDevice) -> Any:
    cap = task.cspace.lookup(trap.cap, Rights.READ | Rights.WRITE)
    if isinstance(cap.obj, (Endpoint, Notification, ReplyObject)):
        raise InvalidArgument("the cap names an IPC object, not a device")
    return cap.obj


def trap_proclist(k: Kernel, task: Task, trap: T.ProcList) -> Any:
    return k.proclist()


def trap_dmesg(k: Kernel, task: Task, trap: T.Dmesg) -> Any:
    return tuple(k.log.lines())


def trap_cpuinfo(k: Kernel, task: Task, trap: T.CpuInfo) -> Any:
    return k.cpuinfo()


def trap_trace(k: Kernel, task: Task, trap: T.Trace) -> Any:
    from kernel.trace import control  # the tracer shadows this module's table

    return control(k, trap.op, trap.arg)


def trap_meminfo(k: Kernel, task: Task, trap: T.MemInfo) -> Any:
    return k.mm.info()


def trap_memballoon(k: Kernel, task: Task, trap: T.MemBalloon) -> Any:
    pages = trap.pages
    if type(pages) is not int or pages == 0:
        raise InvalidArgument(f"MemBalloon takes a nonzero number of pages, got {pages!r}")
    if pages < 0:
        k.mm.balloon_deflate(-pages)
        return len(k.mm.free_frames)
    io_ns = k.mm.balloon_inflate(pages)
    return _after_io(k, task, len(k.mm.free_frames), io_ns)


def trap_log(k: Kernel, task: Task, trap: T.Log) -> Any:
    # The ring keeps a record long after the task is gone: only small plain values go in.
    if not _is_text(trap.event):
        raise InvalidArgument(f"Log event must be a string of at most {MAX_TEXT} characters")
    if len(trap.fields) > MAX_LOG_FIELDS:
        raise InvalidArgument(f"a Log has at most {MAX_LOG_FIELDS} fields, not {len(trap.fields)}")
    fields = dict(trap.fields)
    for key, value in fields.items():
        if type(key) is not str or not key.isidentifier() or key in RESERVED_LOG_FIELDS:
            raise InvalidArgument(
                f"a Log field is a name the kernel does not set, not {value_text(key, 64)}"
            )
        if not _is_plain_log_value(value):
            raise InvalidArgument(
                f"Log field {key} is None, a bool, a 64-bit int, a float or a string "
                f"of at most {MAX_TEXT} characters"
            )
    k.log.info("user", trap.event, task=task.name, pid=task.pid, **fields)
    return None


def _is_plain_log_value(value: Any) -> bool:
    if value is None or type(value) in (bool, float):
        return True
    if type(value) is int:
        return -(1 << 63) <= value < 1 << 63
    return _is_text(value)


# -- MLaaS modules -------------------------------------------------------------------------------------


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{what} must be a non-empty string, got {value!r}")
    return value


def trap_modload(k: Kernel, task: Task, trap: T.ModLoad) -> Any:
    rec = k.mlaas.insmod(
        _check_name(trap.spec, "module"),
        dict(trap.params),
        isolated=trap.isolated is True,
        override=trap.override is True,
    )
    return {"name": rec.name, "kind": rec.kind, "params": dict(rec.params), "mode": rec.mode}


def trap_modunload(k: Kernel, task: Task, trap: T.ModUnload) -> Any:
    return k.mlaas.rmmod(_check_name(trap.name, "module name"))


def trap_modreload(k: Kernel, task: Task, trap: T.ModReload) -> Any:
    rec = k.mlaas.reload(_check_name(trap.name, "module name"), dict(trap.params))
    return {"name": rec.name, "kind": rec.kind, "report": rec.report}


def trap_modlist(k: Kernel, task: Task, trap: T.ModList) -> Any:
    return tuple(k.mlaas.lsmod())


def trap_modinfo(k: Kernel, task: Task, trap: T.ModInfo) -> Any:
    return k.mlaas.modinfo(_check_name(trap.name, "module name"))


def trap_vmcontrol(k: Kernel, task: Task, trap: T.VmControl) -> Any:
    hook = k.vm_control
    if hook is None:
        raise NotSupported("this kernel hosts no VMs")
    answer: list[tuple[Any, BaseException | None]] = []
    blocked = False

    def reply(value: Any = None, exc: SyscallError | None = None) -> None:
        if blocked:
            if task.alive and task.state is State.SLEEP and task.blocked_on is reply:
                k.wake(task, value, exc)
        elif not answer:
            answer.append((value, exc))

    hook(_check_name(trap.op, "vm operation"), trap.args, reply)
    if answer:
        value, exc = answer[0]
        if exc is not None:
            raise exc
        return value
    blocked = True
    k.block(task, State.SLEEP, reply)  # until the hypervisor replies
    return BLOCK


def trap_hypercall(k: Kernel, task: Task, trap: T.Hypercall) -> Any:
    hook = k.hypercall
    if hook is None:
        raise NotSupported("this kernel is not a guest: it has no hypervisor to call")
    number = trap.number
    if not isinstance(number, int) or isinstance(number, bool):
        raise InvalidArgument(f"a hypercall number is an int, got {type(number).__name__}")
    # An int subclass (an IntEnum) is read by its value, not by its own methods.
    return hook(int.__index__(number), trap.args)


# The syscall table: every trap the kernel understands, in one place.
TRAP_TABLE: dict[type, Handler] = {
    T.Send: trap_send,
    T.Recv: trap_recv,
    T.Call: trap_call,
    T.Reply: trap_reply,
    T.ReplyRecv: trap_replyrecv,
    T.NBSend: trap_nbsend,
    T.NBRecv: trap_nbrecv,
    T.Yield: trap_yield,
    T.Signal: trap_signal,
    T.Wait: trap_wait,
    T.Poll: trap_poll,
    T.BindNotification: trap_bindnotification,
    T.NewEndpoint: trap_newendpoint,
    T.NewNotification: trap_newnotification,
    T.NewReply: trap_newreply,
    T.Mint: trap_mint,
    T.Copy: trap_copy,
    T.Revoke: trap_revoke,
    T.Derived: trap_derived,
    T.Delete: trap_delete,
    T.Compute: trap_compute,
    T.Sleep: trap_sleep,
    T.GetTime: trap_gettime,
    T.Alarm: trap_alarm,
    T.Spawn: trap_spawn,
    T.WaitPid: trap_waitpid,
    T.Kill: trap_kill,
    T.Exit: trap_exit,
    T.GetPid: trap_getpid,
    T.Poweroff: trap_poweroff,
    T.MemMap: trap_memmap,
    T.MemWrite: trap_memwrite,
    T.MemRead: trap_memread,
    T.MapDevice: trap_mapdevice,
    T.ProcList: trap_proclist,
    T.Dmesg: trap_dmesg,
    T.MemInfo: trap_meminfo,
    T.Trace: trap_trace,
    T.CpuInfo: trap_cpuinfo,
    T.MemBalloon: trap_memballoon,
    T.Log: trap_log,
    T.ModLoad: trap_modload,
    T.ModUnload: trap_modunload,
    T.ModReload: trap_modreload,
    T.ModList: trap_modlist,
    T.ModInfo: trap_modinfo,
    T.VmControl: trap_vmcontrol,
    T.Hypercall: trap_hypercall,
}

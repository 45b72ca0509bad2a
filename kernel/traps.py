"""The trap objects a task yields to ask the kernel for service.

Traps are immutable values, so a program may build one once and yield it
many times (a server's ``ReplyRecv(ep, reply, msg)`` in its loop).

A task is a generator; `result = yield Call(ep, msg)` is a system call.  Every
trap here has exactly one handler in `syscall.TRAP_TABLE`, so this file plus
that table is the whole syscall surface.  Capability arguments (`ep`, `ntfn`,
`cap`, `reply`) are slot numbers in the calling task's capability space.
"""

from __future__ import annotations

from typing import Any

import attrs

from kernel.caps import Rights

# -- messages ---------------------------------------------------------------

MAX_PAYLOAD_ITEMS = 64
MAX_MSG_CAPS = 4  # caps one message transfers (seL4 allows 3 extra caps); checked at Send


def _check_payload(_inst: Any, _attr: Any, value: Any) -> None:
    if isinstance(value, (list, dict, set, bytearray)):
        raise TypeError(
            "message payload must be immutable (use a tuple, bytes or a frozen attrs class)"
        )
    if isinstance(value, tuple) and len(value) > MAX_PAYLOAD_ITEMS:
        raise ValueError(f"message payload has {len(value)} items; at most {MAX_PAYLOAD_ITEMS}")


@attrs.frozen
class Message:
    """An IPC message: a label, a small immutable payload, and cap slots to transfer.

    The kernel never copies a payload: it hands the receiver the sender's object."""

    label: str = attrs.field(validator=attrs.validators.instance_of(str))
    payload: Any = attrs.field(default=None, validator=_check_payload)
    caps: tuple[int, ...] = attrs.field(default=(), converter=tuple)


class Received:
    """What Recv, Call and ReplyRecv return.

    `badge` identifies the sender's cap; `reply` is the slot of the reply
    cap to answer a Call with (None for Send); `caps` are the slots that
    transferred caps landed in.  A bound notification arriving during Recv
    gives `msg.label == "notification"` and the notification word as `badge`.

    A plain slotted class rather than attrs: the kernel builds one per
    message delivered, on the IPC fast path.
    """

    __slots__ = ("msg", "badge", "reply", "caps")

    def __init__(
        self, msg: Message, badge: int = 0, reply: int | None = None, caps: tuple[int, ...] = ()
    ):
        self.msg = msg
        self.badge = badge
        self.reply = reply
        self.caps = caps

    def __repr__(self) -> str:
        return f"Received({self.msg!r}, badge={self.badge}, reply={self.reply}, caps={self.caps})"


# -- IPC (seL4 model) ---------------------------------------------------------


@attrs.frozen
class Send:
    ep: int
    msg: Message


@attrs.frozen
class Recv:
    """Wait for a message.  `reply` names a reply object (from `NewReply`) to
    bind a caller to, as in seL4's MCS kernel; without one the kernel makes a
    fresh one per Call received."""

    ep: int
    reply: int | None = None


@attrs.frozen
class Call:
    ep: int
    msg: Message


@attrs.frozen
class Reply:
    reply: int
    msg: Message


@attrs.frozen
class ReplyRecv:
    """Answer the caller bound to `reply`, then wait on `ep` with the same
    reply object (a server's loop: one trap per request)."""

    ep: int
    reply: int
    msg: Message


@attrs.frozen
class NBSend:
    ep: int
    msg: Message


@attrs.frozen
class NBRecv:
    ep: int
    reply: int | None = None


@attrs.frozen
class Yield:
    pass


# -- notifications -------------------------------------------------------------


@attrs.frozen
class Signal:
    ntfn: int


@attrs.frozen
class Wait:
    ntfn: int


@attrs.frozen
class Poll:
    ntfn: int


@attrs.frozen
class BindNotification:
    """Bind a notification to the caller: a signal then wakes its Recv.  A
    device cap (a guest's GPU queue) names the device's interrupt notification."""

    ntfn: int


# -- objects and capabilities -------------------------------------------------------


@attrs.frozen
class NewEndpoint:
    pass


@attrs.frozen
class NewNotification:
    pass


@attrs.frozen
class NewReply:
    """A reply object, for Recv and ReplyRecv to bind callers to."""


@attrs.frozen
class Mint:
    cap: int
    rights: int = Rights.ALL
    badge: int = 0


@attrs.frozen
class Copy:
    cap: int
    rights: int | None = None


@attrs.frozen
class Revoke:
    """Delete every cap derived from `cap` (its derivation subtree); `cap` stays."""

    cap: int


@attrs.frozen
class Derived:
    """How many live caps derive from `cap`: a server that hands out minted
    caps learns that nobody holds one any more (Mach's no-senders)."""

    cap: int


@attrs.frozen
class Delete:
    cap: int


# -- CPU and time ---------------------------------------------------------------


@attrs.frozen
class Compute:
    """Use the CPU for `us` microseconds of virtual time."""

    us: float


@attrs.frozen
class Sleep:
    us: float


@attrs.frozen
class GetTime:
    pass


@attrs.frozen
class Alarm:
    """Signal the notification `ntfn` once, `us` microseconds from now: the
    timer interrupt a driver waits for while it also serves requests."""

    ntfn: int
    us: float


# -- tasks ------------------------------------------------------------------------


@attrs.frozen
class Spawn:
    """Start a program by name (or a generator function) as a new task.

    `caps` maps names to cap slots of the caller; the child receives copies,
    found in its `Proc.caps` under the same names.
    """

    program: Any
    args: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    caps: tuple[tuple[str, int], ...] = attrs.field(
        default=(), converter=lambda c: tuple(dict(c).items())
    )
    name: str | None = None


@attrs.frozen
class WaitPid:
    """Wait for a task to exit; returns its status.  With `nohang`, returns
    None at once if it is still running."""

    pid: int
    nohang: bool = False


SIGNALS = {"KILL": -9, "INT": -2, "TERM": -15}


@attrs.frozen
class Kill:
    """End a task.  Its exit status is the signal's: KILL -9, INT -2, TERM -15."""

    pid: int
    signal: str = attrs.field(default="KILL", validator=attrs.validators.in_(SIGNALS))


@attrs.frozen
class Exit:
    code: int = 0


@attrs.frozen
class GetPid:
    pass


@attrs.frozen
class Poweroff:
    pass


# -- memory ------------------------------------------------------------------------


@attrs.frozen
class MemMap:
    """Reserve `pages` pages of address space; returns the base address.
    Frames are allocated on first touch (demand paging)."""

    pages: int


@attrs.frozen
class MemWrite:
    addr: int
    data: bytes


@attrs.frozen
class MemRead:
    addr: int
    size: int


# -- devices ------------------------------------------------------------------------


@attrs.frozen
class MapDevice:
    """A driver maps the device its cap names and gets the device object
    (seL4 drivers map device frames the same way)."""

    cap: int


# -- kernel information (for ps, dmesg, free) ---------------------------------------


@attrs.frozen
class ProcList:
    pass


@attrs.frozen
class Dmesg:
    pass


@attrs.frozen
class MemInfo:
    pass


@attrs.frozen
class CpuInfo:
    """(cpu, busy ns since boot, running pid or 0) for each CPU (`top`)."""


@attrs.frozen
class Trace:
    """Trace the kernel: `op` is start, stop, add (`arg`: events of another
    source), save (`arg`: a file name) or status (kernel/trace.py)."""

    op: str
    arg: Any = None


@attrs.frozen
class MemBalloon:
    """Take `pages` frames out of use (pages > 0), or put them back (pages < 0):
    a guest's balloon driver, around its BALLOON hypercall.  Returns the free
    frames left."""

    pages: int


@attrs.frozen
class Log:
    """Write a line to the kernel log from a task."""

    event: str
    fields: tuple[tuple[str, Any], ...] = attrs.field(
        default=(), converter=lambda f: tuple(dict(f).items())
    )


# -- MLaaS modules (insmod, rmmod, reload, lsmod, modinfo) ----------------------------


def _params(p: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(dict(p).items())


@attrs.frozen
class ModLoad:
    """Load a module by name (from the module path) or by path, with parameters;
    `isolated` runs it in a sandboxed child process, and `override` lets it
    take a shipped module's name."""

    spec: str
    params: tuple[tuple[str, Any], ...] = attrs.field(default=(), converter=_params)
    isolated: bool = False
    override: bool = False


@attrs.frozen
class ModUnload:
    name: str


@attrs.frozen
class ModReload:
    """Load the module's file again and hand its state over; the old version
    stays in if the new one fails."""

    name: str
    params: tuple[tuple[str, Any], ...] = attrs.field(default=(), converter=_params)


@attrs.frozen
class ModList:
    pass


@attrs.frozen
class ModInfo:
    name: str


# -- virtual machines (the `vm` command) ------------------------------------------------


@attrs.frozen
class VmControl:
    """Ask the hypervisor hosted on this kernel to do `op` (list, create,
    start, stop, pause, resume, console) with `args`; ENOSYS where the kernel
    hosts no VMs.  The answer may come later (a guest boots, a guest's shell
    runs a command): the caller blocks until it does."""

    op: str
    args: tuple[Any, ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen
class Hypercall:
    """A guest kernel's task asks its hypervisor (kernel/hypervisor/hypercall.py
    has the table).  Returns ``(status, value)``: status 0 and the answer, or
    an errno number and a message.  ENOSYS on a kernel that is not a guest."""

    number: int
    args: tuple[Any, ...] = attrs.field(default=(), converter=tuple)

"""The hypercall table: what a guest kernel may ask of its hypervisor.  This file
is the guest-to-host surface, as kernel/syscall.py is the task-to-kernel one.

A hypercall is a number and a few plain arguments (ints and strs).  The
dispatcher first reads the call (`read_call`): the number, the argument
count, and each argument converted to its declared type and checked against
its range, so that what a handler sees and what the journal keeps are plain
values (an int subclass becomes an int; a bool, a float, a container or any
other object is refused, and nothing of it is called).  Only then does it run
the handler (`dispatch`).  It always returns `(status, value)`: `Status.OK`
and a value, or an error status and a message of one bounded line.  Nothing
a guest passes makes the host raise, and nothing it passes reaches the
journal unconverted: a refused call is journaled as its refusal.

The dispatcher sees a VM only through `VmContext`, the few things a VM offers
it (name, memory, console, queues, module choice, balloon), so it is tested
with fakes and any VM class that offers them can use it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import attrs

from kernel.errors import SyscallError
from kernel.hypervisor.virtqueue import Memory
from kernel.mlaas.loader import NAME_RE
from kernel.text import printable

MAX_CONSOLE_BYTES = 4096  # one CONSOLE_WRITE
MAX_BALLOON_PAGES = 1 << 20  # one BALLOON step
MAX_MODULE_NAME = 64
MAX_MESSAGE_CHARS = 256  # an error message a guest gets
NOT_A_NUMBER = -1  # the journaled number of a call whose number is not a 64-bit int
_I64 = (-(1 << 63), (1 << 63) - 1)


class Hc(enum.IntEnum):
    """Hypercall numbers.  They are ABI: never renumber, only add."""

    VM_INFO = 0
    CONSOLE_WRITE = 1
    KICK = 2
    POLICY_CHOOSE = 3
    BALLOON = 4
    GPU_SUBMIT = 5


class Status(enum.IntEnum):
    """What a hypercall returns in place of an exception (Linux errno values)."""

    OK = 0
    EPERM = 1
    ENOENT = 2
    EIO = 5
    ENOMEM = 12
    EFAULT = 14
    EINVAL = 22
    ENOSYS = 38


class Result(NamedTuple):
    status: Status
    value: Any  # the answer when OK, else a message for the guest


class HypercallError(Exception):
    """A handler's refusal: the status and message the guest gets."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


class Balloon:
    """Balloon accounting: pages a guest gave back to the host and may take again.
    A VM may subclass it to free and refill the frames themselves."""

    def __init__(self, total_pages: int, min_pages: int = 0) -> None:
        self.total_pages = total_pages
        self.min_pages = min_pages  # the guest always keeps this many
        self.given_pages = 0

    @property
    def held_pages(self) -> int:
        return self.total_pages - self.given_pages

    def give(self, pages: int) -> int:
        if self.held_pages - pages < self.min_pages:
            raise HypercallError(
                Status.EINVAL,
                f"cannot give back {pages} pages: the guest holds {self.held_pages} "
                f"and keeps at least {self.min_pages}",
            )
        self.given_pages += pages
        return self.held_pages

    def take(self, pages: int) -> int:
        if pages > self.given_pages:
            raise HypercallError(
                Status.ENOMEM,
                f"cannot take {pages} pages: only {self.given_pages} were given back",
            )
        self.given_pages -= pages
        return self.held_pages


class Queue(Protocol):
    """A device queue a kick reaches: a `Device`, or a back end's `HostQueue`."""

    @property
    def broken(self) -> str | None: ...

    def process(self) -> int: ...


class VmContext(Protocol):
    """What a VM offers the dispatcher."""

    @property
    def name(self) -> str: ...

    @property
    def memory(self) -> Memory: ...

    @property
    def queues(self) -> Mapping[int, Queue]: ...

    @property
    def gpu_queues(self) -> frozenset[int]: ...

    @property
    def balloon(self) -> Balloon: ...

    def console_write(self, text: str) -> None: ...

    def choose_module(self, name: str) -> Any: ...


# -- arguments -------------------------------------------------------------------------------------


@attrs.frozen
class Param:
    """One argument: its name, type, and bounds (an int's range, a str's length)."""

    name: str
    kind: type
    low: int = 0
    high: int = (1 << 64) - 1

    def convert(self, value: Any) -> int | str:
        """`value` as a plain int or str within bounds; HypercallError(EINVAL) if it is not one.

        Only the value's type is looked at, never its methods: an int or str
        subclass is copied by int's and str's own code, so a hostile
        `__index__`, `__str__`, `__len__` or `__eq__` never runs."""
        got = type(value)
        plain: int | str
        if self.kind is int and got is not bool and issubclass(got, int):
            plain = int.__index__(value)
        elif self.kind is str and issubclass(got, str):
            plain = str.__str__(value)
        else:  # a bool is not an int argument
            want = "an int" if self.kind is int else "a str"
            raise HypercallError(
                Status.EINVAL, f"{self.name} must be {want}, got {_type_name(value)}"
            )
        size = len(plain) if isinstance(plain, str) else plain
        if not self.low <= size <= self.high:
            what = "length" if isinstance(plain, str) else "value"
            raise HypercallError(
                Status.EINVAL,
                f"{self.name} {what} {_shown(size)} is outside {self.low}..{self.high}",
            )
        return plain


_PLAIN_TYPES = (bool, int, float, str, bytes, list, tuple, dict, type(None))


def _type_name(value: Any) -> str:
    """The name of a built-in type; any other is "object" (its own name is never read)."""
    got = type(value)
    return next((t.__name__ for t in _PLAIN_TYPES if got is t), "object")


def _shown(number: int) -> str:
    return str(number) if number.bit_length() <= 128 else f"of {number.bit_length()} bits"


# -- handlers ------------------------------------------------------------------------------------


def hc_vm_info(vm: VmContext) -> dict[str, Any]:
    """The guest's name, memory size, queue numbers and balloon state."""
    return {
        "name": vm.name,
        "memory_bytes": vm.memory.size,
        "queues": sorted(vm.queues),
        "pages": vm.balloon.total_pages,
        "given_pages": vm.balloon.given_pages,
    }


def hc_console_write(vm: VmContext, addr: int, length: int) -> int:
    """Write `length` bytes of guest memory at `addr` to the VM's console (UTF-8)."""
    if addr + length > vm.memory.size:
        raise HypercallError(
            Status.EFAULT, f"{addr:#x}+{length} is outside guest memory of {vm.memory.size} bytes"
        )
    text = vm.memory.read(addr, length).decode("utf-8", errors="replace")
    vm.console_write(text)
    return length


def hc_kick(vm: VmContext, queue: int) -> int:
    """Notify virtqueue `queue`: the device serves what was published.  Returns how many."""
    device = vm.queues.get(queue)
    if device is None:
        raise HypercallError(Status.ENOENT, f"the VM has no queue {queue}")
    served = device.process()
    if device.broken is not None:
        raise HypercallError(Status.EIO, f"queue {queue} is broken: {device.broken}")
    return served


def hc_policy_choose(vm: VmContext, name: str) -> Any:
    """Ask for the MLaaS module named `name`: the host answers with the path of
    a module it allows this guest, which the guest then loads."""
    if not NAME_RE.fullmatch(name):
        raise HypercallError(Status.EINVAL, f"{name!r} is not a module name")
    try:
        return vm.choose_module(name)
    except PermissionError as exc:
        raise HypercallError(Status.EPERM, str(exc)) from None
    except LookupError as exc:
        raise HypercallError(Status.ENOENT, f"no module {name!r}: {exc}") from None


def hc_balloon(vm: VmContext, pages: int) -> int:
    """Give `pages` pages back to the host (pages > 0) or take them again (pages < 0).
    Returns the pages the guest holds after."""
    if pages > 0:
        return vm.balloon.give(pages)
    return vm.balloon.take(-pages)


def hc_gpu_submit(vm: VmContext, queue: int) -> int:
    """Submit the GPU requests published on queue `queue` (a KICK that must
    name a GPU queue): the host's back end serves them on the VM's share of
    the vGPU and answers each with a used entry and an interrupt."""
    if queue not in vm.gpu_queues:
        raise HypercallError(Status.ENOENT, f"the VM has no GPU queue {queue}")
    return hc_kick(vm, queue)


@attrs.frozen
class Hypercall:
    number: Hc
    handler: Callable[..., Any]
    params: tuple[Param, ...]


_U64 = (1 << 64) - 1
_ADDR = Param("addr", int, 0, _U64)

# The hypercall table: every hypercall a guest may make, in one place.
HYPERCALL_TABLE: dict[Hc, Hypercall] = {
    h.number: h
    for h in (
        Hypercall(Hc.VM_INFO, hc_vm_info, ()),
        Hypercall(
            Hc.CONSOLE_WRITE, hc_console_write, (_ADDR, Param("length", int, 0, MAX_CONSOLE_BYTES))
        ),
        Hypercall(Hc.KICK, hc_kick, (Param("queue", int, 0, 0xFFFF),)),
        Hypercall(Hc.POLICY_CHOOSE, hc_policy_choose, (Param("name", str, 1, MAX_MODULE_NAME),)),
        Hypercall(
            Hc.BALLOON, hc_balloon, (Param("pages", int, -MAX_BALLOON_PAGES, MAX_BALLOON_PAGES),)
        ),
        Hypercall(Hc.GPU_SUBMIT, hc_gpu_submit, (Param("queue", int, 0, 0xFFFF),)),
    )
}


class Call(NamedTuple):
    """A hypercall as the dispatcher read it, in plain values: what the journal keeps."""

    number: int  # its number, or NOT_A_NUMBER
    args: tuple[int | str, ...]  # converted to their declared types; () when refused
    refusal: Result | None  # why it was refused before any handler ran


def read_call(number: Any, args: Any) -> Call:
    """Read a guest's hypercall: its number and arguments converted to plain
    values of their declared types and ranges, or the refusal.  Never raises."""
    plain = NOT_A_NUMBER
    try:
        got = type(number)
        if got is bool or not issubclass(got, int):
            raise HypercallError(
                Status.EINVAL, f"a hypercall number is an int, got {_type_name(number)}"
            )
        value = int.__index__(number)
        plain = value if _I64[0] <= value <= _I64[1] else NOT_A_NUMBER
        call = HYPERCALL_TABLE.get(value)  # type: ignore[call-overload]
        if call is None:
            raise HypercallError(Status.ENOSYS, f"no hypercall {_shown(value)}")
        if type(args) is not tuple:
            raise HypercallError(Status.EINVAL, "a hypercall's arguments are a tuple")
        if len(args) != len(call.params):
            raise HypercallError(
                Status.EINVAL,
                f"{call.number.name} takes {len(call.params)} argument(s), got {len(args)}",
            )
        converted = tuple(p.convert(v) for p, v in zip(call.params, args, strict=True))
    except HypercallError as exc:
        return Call(plain, (), Result(exc.status, _message(str(exc))))
    return Call(plain, converted, None)


def dispatch(vm: VmContext, call: Call) -> Result:
    """Run a call that `read_call` read for `vm`.  Always a `Result`, never a host exception."""
    if call.refusal is not None:
        return call.refusal
    try:
        return Result(Status.OK, HYPERCALL_TABLE[Hc(call.number)].handler(vm, *call.args))
    except HypercallError as exc:
        return Result(exc.status, _message(str(exc)))
    except SyscallError as exc:  # a kernel error from the VM's side: same errno, as a status
        return Result(Status.__members__.get(exc.errno, Status.EIO), _message(str(exc)))
    except Exception as exc:  # the VM's callable failed: the guest's call fails, the host goes on
        return Result(Status.EIO, _message(f"{type(exc).__name__}: {exc}"))


def hypercall(vm: VmContext, number: Any, *args: Any) -> Result:
    """Run hypercall `number` for `vm`.  Always a `Result`, never a host exception."""
    return dispatch(vm, read_call(number, args))


def _message(text: str) -> str:
    """A message for the guest: one printable line, at most MAX_MESSAGE_CHARS."""
    return printable(text, MAX_MESSAGE_CHARS)

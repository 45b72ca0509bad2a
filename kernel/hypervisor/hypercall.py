"""The hypercall table: what a guest kernel may ask of its hypervisor.  This file
is the guest-to-host surface, as kernel/syscall.py is the task-to-kernel one.

A hypercall is a number and a few plain arguments (ints and strs).  The
dispatcher `hypercall(vm, number, *args)` checks the number, the argument
count, each argument's type and range, and only then runs the handler.  It
always returns `(status, value)`: `Status.OK` and a value, or an error status
and a message.  Nothing a guest passes makes the host raise.

The dispatcher sees a VM only through `VmContext`, the few things a VM offers
it (name, memory, console, queues, module choice, balloon), so it is tested
with fakes and any VM class that offers them can use it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import attrs

from kernel.errors import SyscallError
from kernel.hypervisor.virtqueue import Memory

MAX_CONSOLE_BYTES = 4096  # one CONSOLE_WRITE
MAX_BALLOON_PAGES = 1 << 20  # one BALLOON step
MAX_MODULE_NAME = 64
_MODULE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


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

    def check(self, value: Any) -> None:
        got = type(value)
        if got is not self.kind:  # exact: a bool is not an int argument
            raise HypercallError(
                Status.EINVAL,
                f"{self.name} must be {'an int' if self.kind is int else 'a str'}, "
                f"got {got.__name__}",
            )
        is_str = self.kind is str
        size: int = len(value) if is_str else value
        if not self.low <= size <= self.high:
            what = "length" if is_str else "value"
            raise HypercallError(
                Status.EINVAL, f"{self.name} {what} {size} is outside {self.low}..{self.high}"
            )


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
    if not _MODULE_NAME.match(name):
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


def hypercall(vm: VmContext, number: Any, *args: Any) -> Result:
    """Run hypercall `number` for `vm`.  Always a `Result`, never a host exception."""
    try:
        if type(number) is not int and not isinstance(number, Hc):
            raise HypercallError(
                Status.EINVAL, f"a hypercall number is an int, got {type(number).__name__}"
            )
        call = HYPERCALL_TABLE.get(number)  # type: ignore[call-overload]
        if call is None:
            raise HypercallError(Status.ENOSYS, f"no hypercall {number}")
        if len(args) != len(call.params):
            raise HypercallError(
                Status.EINVAL,
                f"{call.number.name} takes {len(call.params)} argument(s), got {len(args)}",
            )
        for param, value in zip(call.params, args, strict=True):
            param.check(value)
        return Result(Status.OK, call.handler(vm, *args))
    except HypercallError as exc:
        return Result(exc.status, str(exc))
    except SyscallError as exc:  # a kernel error from the VM's side: same errno, as a status
        return Result(Status.__members__.get(exc.errno, Status.EIO), str(exc))
    except Exception as exc:  # the VM's callable failed: the guest's call fails, the host goes on
        return Result(Status.EIO, f"{type(exc).__name__}: {exc}")

"""Tasks: the kernel's threads of control.

A task is a generator coroutine.  It runs only when a CPU steps it, and it
asks for service only by yielding trap objects (curio's model).  The kernel
sends each trap's result back into the generator, or throws a
`SyscallError` into it.

`Proc` is what a program sees of itself: its pid, its arguments, the caps it
was started with (by name), and a seeded random generator.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from kernel.caps import CSpace

if TYPE_CHECKING:
    from kernel.clock import Timer
    from kernel.memory import AddressSpace


class State(enum.Enum):
    RUNNABLE = "R"  # in a dispatch queue
    RUNNING = "C"  # on a CPU
    SEND = "S"  # blocked sending on an endpoint
    RECV = "W"  # blocked receiving on an endpoint
    REPLY = "Y"  # blocked in Call, waiting for the reply
    NOTIFY = "N"  # blocked in Wait on a notification
    SLEEP = "Z"  # sleeping, or waiting for paging I/O
    CHILD = "P"  # waiting for a child to exit
    DEAD = "X"


BLOCKED_STATES = frozenset(
    {State.SEND, State.RECV, State.REPLY, State.NOTIFY, State.SLEEP, State.CHILD}
)


class Proc:
    """A program's view of itself."""

    __slots__ = ("pid", "name", "argv", "caps", "rng")

    def __init__(self, pid: int, name: str, argv: tuple[str, ...], caps: dict[str, int], seed: int):
        self.pid = pid
        self.name = name
        self.argv = argv
        self.caps = caps
        self.rng = random.Random(seed)


class Task:
    __slots__ = (
        "pid", "name", "gen", "state", "cspace", "aspace", "proc", "parent",
        "created_ns", "cpu_ns", "vtime", "compute_left_ns", "slice_ns",
        "resume_value", "resume_exc", "blocked_on", "blocked_reply", "timer", "exit_waiters",
        "bound_ntfn", "traps", "cpu", "kernel", "alive", "alarms",
    )  # fmt: skip

    def __init__(self, kernel: Any, pid: int, name: str, gen: Generator, parent: int, now_ns: int):
        self.kernel = kernel
        self.pid = pid
        self.name = name
        self.gen = gen
        self.state = State.RUNNABLE
        self.cspace = CSpace(owner=name)
        self.aspace: AddressSpace | None = None
        self.proc: Proc | None = None
        self.parent = parent
        self.created_ns = now_ns
        self.cpu_ns = 0  # CPU time charged so far
        self.vtime = 0  # set by a policy, orders vtime dispatch queues (sched_ext's dsq_vtime)
        self.compute_left_ns = 0  # rest of the current Compute trap
        self.slice_ns = 0  # time slice granted at dispatch
        self.resume_value: Any = None
        self.resume_exc: BaseException | None = None
        self.blocked_on: Any = None
        self.blocked_reply: int | None = None  # the reply object a blocked Recv named
        self.timer: Timer | None = None
        self.exit_waiters: list[Task] = []
        self.bound_ntfn: Any = None
        self.traps = 0
        self.alive = True  # False once dead (kept beside `state` for the fast path)
        self.cpu = -1  # the CPU it last ran on
        self.alarms = 0  # its Alarm traps not yet fired (bounded: syscall.MAX_ALARMS)

    def __repr__(self) -> str:
        return f"<Task {self.pid} {self.name} {self.state.name}>"

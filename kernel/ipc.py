"""IPC objects (seL4 model): endpoints, notifications and one-shot reply objects.

An `Endpoint` has no buffer.  A send meets a receive (rendezvous): whichever
side arrives first waits in the endpoint's queue.  A `Notification` is a word
of badge bits: Signal ORs a badge in, Wait takes the word and clears it.
Call makes a `ReplyObject` that the receiver can use exactly once.

These are plain objects; the trap handlers in `syscall.py` hold the logic.
Each object counts the caps naming it so that a message can never wait
forever on an endpoint nobody is able to receive from.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from kernel.caps import Capability, Rights

if TYPE_CHECKING:
    from kernel.task import Task
    from kernel.traps import Message


class KernelObject:
    """Base of objects named by caps; tracks how many caps can read/write it."""

    __slots__ = ("readers", "writers", "oid")
    _next_oid = 0

    def __init__(self) -> None:
        self.readers = 0
        self.writers = 0
        KernelObject._next_oid += 1
        self.oid = KernelObject._next_oid

    def cap_added(self, cap: Capability) -> None:
        if cap.rights & Rights.READ:
            self.readers += 1
        if cap.rights & Rights.WRITE:
            self.writers += 1

    def cap_dropped(self, cap: Capability) -> list[Task]:
        """Returns tasks that can no longer complete and must get an error."""
        if cap.rights & Rights.READ:
            self.readers -= 1
        if cap.rights & Rights.WRITE:
            self.writers -= 1
        return []


class Endpoint(KernelObject):
    __slots__ = ("senders", "receivers")

    def __init__(self) -> None:
        super().__init__()
        # Waiting senders: (task, message, badge, is_call, transferred caps).
        self.senders: deque[tuple[Task, Message, int, bool, list[Capability]]] = deque()
        self.receivers: deque[Task] = deque()

    def cap_dropped(self, cap: Capability) -> list[Task]:
        super().cap_dropped(cap)
        if self.readers > 0 or not self.senders:
            return []
        # Nobody can ever receive these messages: return them as errors.
        stranded = [entry[0] for entry in self.senders]
        self.senders.clear()
        return stranded


class Notification(KernelObject):
    __slots__ = ("word", "waiters", "bound")

    def __init__(self) -> None:
        super().__init__()
        self.word = 0
        self.waiters: deque[Task] = deque()
        self.bound: Task | None = None


class ReplyObject(KernelObject):
    """One-shot: made by Call, consumed by Reply.  `caller` is blocked on it."""

    __slots__ = ("caller", "used")

    def __init__(self, caller: Task | None = None) -> None:
        super().__init__()
        self.caller: Task | None = caller
        self.used = False

    def cap_dropped(self, cap: Capability) -> list[Task]:
        super().cap_dropped(cap)
        if self.used or self.caller is None or self.readers + self.writers > 0:
            return []
        # The only way to answer the caller is gone: it gets an error.
        caller, self.caller, self.used = self.caller, None, True
        return [caller]


def describe(obj: Any) -> str:
    return f"{type(obj).__name__.lower()}#{getattr(obj, 'oid', '?')}"

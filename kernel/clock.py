"""Virtual time: one event heap shared by every kernel instance on it.

The whole event loop is a heap of ``[time_ns, seq, callback, arg, owner]``
entries and a `step()` that pops one (SimPy's model).  Time is an integer of nanoseconds and
only moves when an event is popped, so a run is deterministic: entries with the
same time run in the order they were scheduled.

Several kernels share one `EventLoop`, owned by their `Machine`
(`kernel/machine.py`) — the hypervisor puts guest kernels on its host's clock —
so nothing here knows about a particular kernel.  An event may name its
*owner* (a kernel): the loop counts the owner's events as they run
(`owner.ticks`), and can hand a kernel's pending events to another loop —
which is how a guest restored from a snapshot rejoins a machine
(kernel/hypervisor/snapshot.py).

`RealtimeLoop` is a thin subclass that only paces `step()` to the wall clock and
accepts events injected from other threads (the interactive terminal).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from typing import Any

Callback = Callable[[Any], None]
_TAKEN = object()  # marks entries being moved out of a heap


class Timer:
    """A handle on a scheduled event; `cancel()` makes it a no-op (lazy deletion)."""

    __slots__ = ("entry",)

    def __init__(self, entry: list) -> None:
        self.entry = entry

    @property
    def when_ns(self) -> int:
        return self.entry[0]

    def cancel(self) -> None:
        self.entry[2] = None


class EventLoop:
    """A max-speed virtual-time loop."""

    def __init__(self) -> None:
        self.now_ns = 0
        self._heap: list[list] = []
        self._seq = 0
        self.changes = 0  # bumped on every push and pop: cheap "did the heap change?"
        self.stopping = False  # a stop() was asked; CPUs yield to the loop
        self.until_ns: int | None = None  # the horizon of the current run()
        self.paced = False  # True when virtual time must not run ahead of the wall clock

    # -- scheduling ---------------------------------------------------------

    def call_at(
        self, when_ns: int, callback: Callback, arg: Any = None, owner: Any = None
    ) -> Timer:
        if when_ns < self.now_ns:
            when_ns = self.now_ns
        self._seq += 1
        self.changes += 1
        entry = [when_ns, self._seq, callback, arg, owner]
        heapq.heappush(self._heap, entry)
        return Timer(entry)

    def call_later(
        self, delay_ns: int, callback: Callback, arg: Any = None, owner: Any = None
    ) -> Timer:
        return self.call_at(self.now_ns + delay_ns, callback, arg, owner)

    # -- a kernel's events, for snapshots -------------------------------------

    def owned(self, owner: Any) -> list[list]:
        """The pending (not cancelled) entries of `owner`, in the order they will run."""
        return sorted(e for e in self._heap if e[4] is owner and e[2] is not None)

    def take_owned(self, owner: Any) -> list[list]:
        """Remove `owner`'s pending entries from this loop and return them, in order."""
        taken = self.owned(owner)
        for entry in taken:
            entry[4] = _TAKEN  # its Timer still points at it: the entry itself moves
        self._heap = [e for e in self._heap if e[4] is not _TAKEN and e[2] is not None]
        heapq.heapify(self._heap)
        self.changes += 1
        return taken

    def put_owned(self, entries: list[list], owner: Any, seqs: list[int] | None = None) -> bool:
        """Add entries taken from another loop, for `owner`, keeping their
        Timers valid.  `seqs` gives each its place among equal times (the
        sequence numbers it had on the loop it first ran on); when they are
        not given, or some are taken here, the entries follow everything
        already here, in their order.  Returns whether `seqs` were used."""
        exact = seqs is not None and not {e[1] for e in self._heap} & set(seqs)
        if seqs is None or not exact:
            seqs = list(range(self._seq + 1, self._seq + 1 + len(entries)))
        for entry, seq in zip(entries, seqs, strict=True):
            # An event already due (the owner arrives later than it left) runs now.
            entry[0] = max(entry[0], self.now_ns)
            entry[1], entry[4] = seq, owner
            heapq.heappush(self._heap, entry)
        self._seq = max(self._seq, *seqs) if seqs else self._seq
        self.changes += 1
        return exact

    def next_time(self) -> int | None:
        """Time of the earliest pending event, or None when nothing is pending."""
        heap = self._heap
        while heap and heap[0][2] is None:
            heapq.heappop(heap)
            self.changes += 1
        return heap[0][0] if heap else None

    def advance_to(self, when_ns: int) -> None:
        """Move the clock forward without popping an event.

        A CPU that keeps running a task between events uses this; the caller
        guarantees that no pending event is earlier than `when_ns`.
        """
        self.now_ns = when_ns

    # -- running ------------------------------------------------------------

    def stop(self) -> None:
        """Make the current `run()` return after the event being processed."""
        self.stopping = True

    def step(self) -> bool:
        """Pop and run one event.  Returns False when the heap is empty."""
        heap = self._heap
        while heap:
            when, _seq, callback, arg, owner = heapq.heappop(heap)
            self.changes += 1
            if callback is None:
                continue
            self.now_ns = when
            if owner is not None:
                owner.ticks += 1
            callback(arg)
            return True
        return False

    def run(self, until_ns: int | None = None) -> None:
        """This while loop is our event loop: pop events until stopped,
        until the heap is empty, or until virtual time would pass `until_ns`."""
        self.stopping = False
        self.until_ns = until_ns
        while not self.stopping:
            nxt = self.next_time()
            if nxt is None:
                if not self._idle_wait(until_ns):
                    break
                continue
            if until_ns is not None and nxt > until_ns:
                self._pace(until_ns)
                self.now_ns = max(self.now_ns, until_ns)
                break
            self._pace(nxt)
            self.step()
        self.stopping = False
        self.until_ns = None

    # -- hooks for RealtimeLoop ---------------------------------------------

    def wall_virtual_ns(self) -> int:
        """The virtual time the wall clock has reached (max speed: no limit)."""
        return self.now_ns

    def resync(self) -> None:
        """Max speed: there is no wall clock to follow."""

    def _pace(self, when_ns: int) -> None:
        """Max speed: never wait."""

    def _idle_wait(self, until_ns: int | None) -> bool:
        """Called with nothing to do.  Max speed: the run is over."""
        if until_ns is not None:
            self.now_ns = max(self.now_ns, until_ns)
        return False

    def call_soon_threadsafe(self, callback: Callback, arg: Any = None) -> None:
        raise RuntimeError("only a RealtimeLoop accepts events from other threads")


class RealtimeLoop(EventLoop):
    """Paces virtual time to the wall clock (`speed` virtual seconds per wall
    second) and accepts events injected from other threads."""

    def __init__(self, speed: float = 1.0) -> None:
        super().__init__()
        if speed <= 0:
            raise ValueError(f"realtime speed must be positive, got {speed}")
        self.speed = speed
        self.paced = True
        self._cond = threading.Condition()
        self._injected: list[tuple[Callback, Any]] = []
        self._wall0 = time.monotonic()
        self._virt0 = 0

    def call_soon_threadsafe(self, callback: Callback, arg: Any = None) -> None:
        with self._cond:
            self._injected.append((callback, arg))
            self._cond.notify()

    def stop(self) -> None:
        super().stop()
        with self._cond:
            self._cond.notify()

    def resync(self) -> None:
        """Pace from here: the wall clock now is virtual time now.  A lag
        built up so far (a slow start) is forgotten, not caught up on; call
        it on the loop's thread, before a measurement starts."""
        self._wall0 = time.monotonic()
        self._virt0 = self.now_ns

    def _wall_deadline(self, when_ns: int) -> float:
        return self._wall0 + (when_ns - self._virt0) / 1e9 / self.speed

    def _drain_injected(self) -> bool:
        with self._cond:
            injected, self._injected = self._injected, []
        for callback, arg in injected:
            self.call_at(self.now_ns, callback, arg)
        return bool(injected)

    def _pace(self, when_ns: int) -> None:
        # Sleep until the wall clock reaches `when_ns`, waking early if
        # another thread injects an event (it is then scheduled "now").
        while not self.stopping:
            if self._drain_injected():
                return
            delay = self._wall_deadline(when_ns) - time.monotonic()
            if delay <= 0:
                return
            with self._cond:
                if not self._injected and not self.stopping:
                    self._cond.wait(min(delay, 0.05))
            self._sync_now()

    def wall_virtual_ns(self) -> int:
        return self._virt0 + int((time.monotonic() - self._wall0) * self.speed * 1e9)

    def _sync_now(self) -> None:
        # Virtual time follows the wall clock while we wait, so injected
        # events land at the current wall time, not at the last event's time.
        wall_virt = self.wall_virtual_ns()
        nxt = self.next_time()
        if nxt is not None:
            wall_virt = min(wall_virt, nxt)
        self.now_ns = max(self.now_ns, wall_virt)

    def _idle_wait(self, until_ns: int | None) -> bool:
        while not self.stopping:
            if self._drain_injected():
                return True
            if until_ns is not None and self._wall_deadline(until_ns) <= time.monotonic():
                self.now_ns = max(self.now_ns, until_ns)
                return False
            with self._cond:
                if not self._injected and not self.stopping:
                    self._cond.wait(0.05)
            self._sync_now()
        return False

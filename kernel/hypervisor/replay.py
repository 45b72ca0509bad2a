"""Replay: a guest kernel rebuilt from its journal, step for step.

A fresh kernel of the guest's configuration runs alone on a machine of its
own, and gets, at the same places in its run, the inputs the journal holds
(journal.py):

* inputs that reached the guest from the host's events (grants, console lines,
  interrupts, window writes) are delivered by events of the replay's own, at
  their virtual time, once the guest's `ticks` reach the journaled count —
  so they land between the same two of the guest's own events;
* grants given inside one of the guest's calls to its CPU provider are given
  inside the same call (`ReplayCpus` counts them);
* hypercalls are answered from the journal, and the host is not asked; a
  call is read as the live dispatcher reads it (`read_call`), and compared
  with the journal in those plain values.  (A policy answer names the file
  the *restoring* host found for the module: snapshot.restore rewrites it
  before the replay, so no path from a file is ever loaded.)

Every delivery first checks the guest's state digest against the journaled
one, and the end of the replay checks the full state hash of the snapshot:
a replay that went another way stops with `ReplayDiverged`, naming the entry.

The replay runs at the speed of the guest's own run, not the host's: a
snapshot of an older VM takes longer to restore (README, "Snapshots").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kernel.clock import EventLoop
from kernel.config import KernelConfig
from kernel.cpu import Cpu
from kernel.hypervisor.hypercall import read_call
from kernel.hypervisor.journal import Digests, Entry
from kernel.hypervisor.port import WINDOW_BYTES
from kernel.hypervisor.virtqueue import GuestMemory
from kernel.kernel import Kernel
from kernel.machine import Machine
from kernel.programs import ProgramTable


class ReplayDiverged(RuntimeError):
    """The replayed guest did not follow its journal."""


class _ReplayLoop(EventLoop):
    """The replay's event loop: after each event, an input may be due."""

    def __init__(self, replay: Replay) -> None:
        super().__init__()
        self.replay = replay

    def step(self) -> bool:
        ran = super().step()
        if ran:
            self.replay.after_event()
        return ran


class ReplayCpus:
    """The replayed guest's CPU provider: it grants only what the journal says,
    inside the same call as in the journaled run.  It keeps the vCPUs that
    asked and were not granted yet, in the order they asked: where the guest
    stands in its host's queue (what a snapshot's `domain.waiting` must say)."""

    def __init__(self, replay: Replay) -> None:
        self.replay = replay
        self.calls = 0
        self.asking: list[int] = []

    def request(self, vcpu: Cpu) -> None:
        self.calls += 1
        self.asking.append(vcpu.id)
        self.replay.deliver_inside(self.calls)

    def release(self, vcpu: Cpu) -> None:
        self.calls += 1
        if vcpu.id in self.asking:
            self.asking.remove(vcpu.id)
        self.replay.deliver_inside(self.calls)


class Replay:
    """Rebuild one guest from `entries`, up to the snapshot's place in its run."""

    def __init__(
        self,
        config: KernelConfig,
        entries: list[Entry],
        programs: ProgramTable,
        wire: Callable[[Kernel, GuestMemory], None],
        created_ns: int = 0,
    ) -> None:
        self.entries = entries
        self.machine = Machine(replay=True)
        self.machine.loop = _ReplayLoop(self)
        self.machine.loop.now_ns = created_ns  # the guest was made at this time
        self.cpus = ReplayCpus(self)
        self.console: list[str] = []
        self.window = GuestMemory(WINDOW_BYTES)
        self.kernel = Kernel(
            config,
            machine=self.machine,
            cpu_provider=self.cpus,
            programs=programs,
            console=self.console.append,
        )
        self.kernel.hypercall = self._hypercall
        wire(self.kernel, self.window)
        # Three cursors into the journal, one per way an input arrives.
        self._outside = [i for i, e in enumerate(entries) if not e.inside and e.kind != "hc"]
        self._inside = [i for i, e in enumerate(entries) if e.inside]
        self._hcs = [i for i, e in enumerate(entries) if e.kind == "hc"]
        self._next_outside = self._next_inside = self._next_hc = 0
        self._waiting = False  # an input waits for the guest at this instant
        self._marker_at = -1
        self._last_marker: tuple[int, int, int] | None = None
        self.digests = Digests()
        self._discarded = False

    # -- running --------------------------------------------------------------------------

    def run(self, at_ns: int, ticks: int, calls: int) -> Kernel:
        """Replay up to virtual time `at_ns`, `ticks` and `calls`: where the
        snapshot was taken.  Returns the guest kernel, on the replay's machine."""
        loop = self.machine.loop
        self._arm()
        loop.until_ns = at_ns  # a CPU never runs past the snapshot inline
        k = self.kernel
        try:
            while True:
                nxt = loop.next_time()
                if nxt is None or nxt > at_ns:
                    break
                if (
                    nxt == at_ns
                    and self._finished()
                    and k.ticks >= ticks
                    and self.cpus.calls >= calls
                ):
                    break
                loop.step()
        finally:
            loop.until_ns = None
        loop.advance_to(max(loop.now_ns, at_ns))
        if not self._finished():
            entry = self.entries[self._pending_index()]
            raise ReplayDiverged(
                f"journal entry {self._pending_index()} ({entry.kind}) was never reached"
            )
        if (k.ticks, self.cpus.calls) != (ticks, calls):
            raise ReplayDiverged(
                f"the replay ended at tick {k.ticks}, call {self.cpus.calls}; "
                f"the snapshot was taken at tick {ticks}, call {calls}"
            )
        return k

    def discard(self) -> None:
        """Drop a replay that failed: its kernel shuts down (an isolated
        module's child with it), and delivers no more inputs meanwhile."""
        self._discarded = True
        self.machine.shutdown()

    def _finished(self) -> bool:
        return (
            self._next_outside == len(self._outside)
            and self._next_inside == len(self._inside)
            and self._next_hc == len(self._hcs)
        )

    def _pending_index(self) -> int:
        left = []
        for cursor, indices in (
            (self._next_outside, self._outside),
            (self._next_inside, self._inside),
            (self._next_hc, self._hcs),
        ):
            if cursor < len(indices):
                left.append(indices[cursor])
        return min(left)

    # -- inputs from the host's events ------------------------------------------------------

    def _arm(self) -> None:
        """A marker event for each instant an input arrives, all made before
        the guest runs, so that at its instant a marker comes before every
        event of the guest's (made later) and a CPU never runs past it inline."""
        loop = self.machine.loop
        for time_ns in sorted({self.entries[i].time_ns for i in self._outside}):
            loop.call_at(time_ns, self._marker)

    def _marker(self, _arg: Any = None) -> None:
        k = self.kernel
        place = (self.machine.loop.now_ns, k.ticks, self.cpus.calls)
        stuck, self._last_marker = place == self._last_marker, place
        self._deliver_outside()
        if self._waiting and stuck:
            # The guest made no progress since the last marker at this instant:
            # nothing will bring it to the input's place, the replay left the journal.
            index = self._outside[self._next_outside]
            entry = self.entries[index]
            raise ReplayDiverged(
                f"journal entry {index} ({entry.kind}) waits for tick {entry.ticks}, call "
                f"{entry.calls}; the guest stopped at tick {self.kernel.ticks}, call {self.cpus.calls}"
            )

    def after_event(self) -> None:
        """Called by the replay's loop after each event: an input waiting at
        this instant is delivered as soon as the guest reaches its place."""
        if self._waiting:
            self._deliver_outside()

    def _deliver_outside(self) -> None:
        loop, k = self.machine.loop, self.kernel
        self._waiting = False
        while self._next_outside < len(self._outside):
            index = self._outside[self._next_outside]
            entry = self.entries[index]
            if entry.time_ns > loop.now_ns:
                return  # its instant's marker comes
            if entry.time_ns < loop.now_ns:
                raise ReplayDiverged(
                    f"journal entry {index} ({entry.kind}) was due at {entry.time_ns} ns, "
                    f"but the guest ran on to {loop.now_ns} ns without it"
                )
            if (k.ticks, self.cpus.calls) < (entry.ticks, entry.calls):
                # The guest has events of its own to run at this instant first:
                # deliver after the one that brings it to the input's place,
                # and keep a marker here so that no CPU runs past the instant.
                self._waiting = True
                if self._marker_at != loop.now_ns or loop.next_time() != loop.now_ns:
                    loop.call_at(loop.now_ns, self._marker)
                    self._marker_at = loop.now_ns
                return
            self._next_outside += 1
            self._apply(index, entry)

    # -- grants inside the guest's own calls -------------------------------------------------

    def deliver_inside(self, calls: int) -> None:
        while not self._discarded and self._next_inside < len(self._inside):
            index = self._inside[self._next_inside]
            entry = self.entries[index]
            if entry.calls != calls:
                if entry.calls < calls:
                    raise ReplayDiverged(
                        f"journal entry {index} ({entry.kind}) came inside call {entry.calls}, "
                        f"which passed without it"
                    )
                return
            self._next_inside += 1
            self._apply(index, entry)

    # -- hypercalls ---------------------------------------------------------------------------

    def _hypercall(self, number: int, args: tuple[Any, ...]) -> tuple[int, Any]:
        if self._next_hc >= len(self._hcs):
            raise ReplayDiverged(
                f"the guest made hypercall {number} that its journal has no answer for"
            )
        index = self._hcs[self._next_hc]
        entry = self.entries[index]
        self._check(index, entry)
        journaled_number, journaled_args, answer = entry.data
        call = read_call(number, args)
        if (journaled_number, list(journaled_args)) != (call.number, list(call.args)):
            raise ReplayDiverged(
                f"journal entry {index}: the guest called hypercall {call.number}{call.args!r}, "
                f"the journal has {journaled_number}{tuple(journaled_args)!r}"
            )
        self._next_hc += 1
        status, value = answer
        return status, value

    # -- delivery -------------------------------------------------------------------------------

    def _check(self, index: int, entry: Entry) -> None:
        k = self.kernel
        check = 0 if entry.kind == "hc" else self.digests.at(k, self.cpus.calls)
        here = (k.loop.now_ns, k.ticks, self.cpus.calls, check)
        there = (entry.time_ns, entry.ticks, entry.calls, entry.digest)
        if here != there:
            raise ReplayDiverged(
                f"journal entry {index} ({entry.kind}): the guest is at time {here[0]} ns, "
                f"tick {here[1]}, call {here[2]}, digest {here[3]:08x}; the journal says "
                f"{there[0]} ns, tick {there[1]}, call {there[2]}, digest {there[3]:08x}"
            )

    def _apply(self, index: int, entry: Entry) -> None:
        self._check(index, entry)
        k = self.kernel
        kind, data = entry.kind, entry.data
        journal, k.journal = k.journal, None  # the kernel would journal it again
        try:
            if kind == "grant":
                if data[0] in self.cpus.asking:
                    self.cpus.asking.remove(data[0])
                k.cpu_granted(k.cpus[data[0]], data[1])
            elif kind == "line":
                k.tty._feed(data[0])
            elif kind == "keys":
                k.tty._type_key(data[0])
            elif kind == "eof":
                k.tty._close(None)
            elif kind == "intr":
                k.tty._interrupt(None)
            elif kind == "procdump":
                k.tty._procdump(None)
            elif kind == "irq":
                k.device_interrupt(data[0], data[1])
            elif kind == "dma":
                self.window.write(data[0], bytes(data[1]))
            elif kind == "boot":
                k.boot(wait=False)
            elif kind == "echo":
                k.log.echo_level = data[0]
            else:
                raise ReplayDiverged(f"journal entry {index} has an unknown kind {kind!r}")
        finally:
            k.journal = journal

"""A guest's journal: every input from outside, placed exactly in its run.

A guest kernel is deterministic except for what reaches it from outside:
host CPU grants, console lines, device interrupts and what its host writes
into its window, and the answers to its hypercalls.  The hypervisor journals
each of these as the guest gets it (`Kernel.journal`, `JournaledMemory`,
`Vm.hypercall`), with its place in the guest's run:

* the virtual time;
* the guest's `ticks` (its CPU steps and its own events so far), which orders
  an input among the guest's own events at the same instant;
* how many calls the guest has made to its CPU provider, and whether the input
  came *inside* one of them (a grant the credit scheduler gives at once);
* a digest of the guest's state, checked again when the journal is replayed.

Replaying the journal on a fresh kernel (replay.py) rebuilds the guest as it
was: that is a snapshot (snapshot.py).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from kernel.cpu import Cpu, CpuProvider
    from kernel.kernel import Kernel

_DIGEST = struct.Struct("<qqqqqq")


class Entry(NamedTuple):
    time_ns: int
    ticks: int
    calls: int  # the guest's CPU-provider calls so far
    inside: bool  # given inside one of them
    kind: str  # grant, line, eof, intr, procdump, irq, dma, hc, boot
    data: tuple[Any, ...]
    digest: int


class Digests:
    """`digest`, computed once per place in a run (time, ticks, provider calls):
    the inputs that arrive together at one place (a grant and the writes and
    interrupt of one answer) share it.  The live journal and its replay both
    use this, so they compare the same values."""

    def __init__(self) -> None:
        self._place: tuple[int, int, int] | None = None
        self._value = 0

    def at(self, kernel: Kernel, calls: int) -> int:
        place = (kernel.loop.now_ns, kernel.ticks, calls)
        if place != self._place:
            self._place, self._value = place, digest(kernel)
        return self._value


def digest(kernel: Kernel) -> int:
    """A cheap fingerprint of a kernel's run: time, ticks, tasks, CPU time, memory use."""
    tasks = kernel.tasks.values()
    packed = _DIGEST.pack(
        kernel.loop.now_ns,
        kernel.ticks,
        len(kernel.tasks),
        sum(t.traps for t in tasks),
        sum(t.cpu_ns for t in tasks),
        len(kernel.mm.free_frames) + (kernel.mm.faults << 20),
    )
    return zlib.crc32(packed)


class VcpuPort:
    """A guest's CPU provider: it forwards to the hypervisor's scheduler and
    counts the guest's calls, so a grant given inside one is placed in it."""

    def __init__(self, provider: CpuProvider) -> None:
        self.provider = provider
        self.calls = 0
        self.inside = False

    def request(self, vcpu: Cpu) -> None:
        self._forward(self.provider.request, vcpu)

    def release(self, vcpu: Cpu) -> None:
        self._forward(self.provider.release, vcpu)

    def _forward(self, call: Callable[[Cpu], None], vcpu: Cpu) -> None:
        self.calls += 1
        self.inside = True
        try:
            call(vcpu)
        finally:
            self.inside = False


class Journal:
    """The inputs of one guest, in order (`note` is the kernel's `journal` hook)."""

    def __init__(self, kernel: Kernel, port: VcpuPort) -> None:
        self.kernel = kernel
        self.port = port
        self.entries: list[Entry] = []
        self.digests = Digests()

    def note(self, kind: str, *data: Any) -> None:
        k = self.kernel
        # A hypercall is checked by its number and arguments on replay: it
        # skips the digest, which costs as much as the call itself.
        check = 0 if kind == "hc" else self.digests.at(k, self.port.calls)
        self.entries.append(
            Entry(k.loop.now_ns, k.ticks, self.port.calls, self.port.inside, kind, data, check)
        )

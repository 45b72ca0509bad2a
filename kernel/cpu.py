"""CPUs, and the run time a host grants them.

On bare metal a kernel's CPUs run whenever they have work.  A kernel may
instead be given a `CpuProvider` — the hypervisor's vCPU scheduler, or the
round-robin `HostCpus` in kernel/machine.py — and its CPUs are then virtual:

* a vCPU runs only inside a *grant*, a span of virtual time on a host CPU;
* a vCPU that has work and no grant asks its provider (`request`), and runs
  nothing until the provider calls `vcpu.grant(until_ns)`;
* a vCPU gives its host CPU back (`release`) when it has nothing left to run,
  or when its grant is used up — then, if it still has work, it asks again.

The task a vCPU was running stays on it while it waits, as a guest's thread
stays on a descheduled vCPU.  A grant ends at a trap boundary: `Compute` is
cut at the grant's end, a trap or a context switch in progress is finished
(so a grant may be overrun by one of them, at most a few µs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from kernel.clock import Timer
    from kernel.kernel import Kernel
    from kernel.task import Task

#: The grant of a bare-metal CPU: it never ends.
NO_LIMIT_NS = 1 << 62


class Cpu:
    __slots__ = (
        "id", "kernel", "current", "event", "active", "slice_end", "switches",
        "grant_end", "requested", "idle_ns", "idle_since",
    )  # fmt: skip

    def __init__(self, cpu_id: int, kernel: Kernel, granted: bool = True) -> None:
        self.id = cpu_id
        self.kernel = kernel
        self.current: Task | None = None
        self.event: Timer | None = None  # the pending continuation of this CPU
        self.active = False  # inside the kernel's CPU loop right now
        self.slice_end = 0
        self.switches = 0
        self.grant_end = NO_LIMIT_NS if granted else 0  # may run while now < grant_end
        self.requested = False  # asked its provider for a grant, not yet given
        # Idle time, for `top`: counted when the CPU finds no task and when it
        # is woken again, never per step.  idle_since is -1 while it runs.
        self.idle_ns = 0
        self.idle_since = kernel.loop.now_ns

    def busy_ns(self, now_ns: int, since_ns: int) -> int:
        """Virtual time this CPU ran tasks between `since_ns` (boot) and now."""
        idle = self.idle_ns + (now_ns - self.idle_since if self.idle_since >= 0 else 0)
        return now_ns - since_ns - idle

    def wakes(self, now_ns: int) -> None:
        """The CPU leaves the idle state."""
        if self.idle_since >= 0:
            self.idle_ns += now_ns - self.idle_since
            self.idle_since = -1

    def grant(self, until_ns: int) -> None:
        """The provider gives this vCPU a host CPU until virtual time `until_ns`."""
        self.kernel.cpu_granted(self, until_ns)


class CpuProvider(Protocol):
    """Grants a kernel's CPUs run time on host CPUs (the hypervisor's vCPU scheduler).

    Both calls come from inside the event loop.  A provider may call
    `vcpu.grant` from within them, or later, from an event of its own.
    """

    def request(self, vcpu: Cpu) -> None:
        """`vcpu` has work and no grant: grant it time when a host CPU is free."""

    def release(self, vcpu: Cpu) -> None:
        """`vcpu` gives back its host CPU (idle, or its grant is used up), or
        withdraws its request (its kernel halted)."""

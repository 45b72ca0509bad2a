"""The machine: a host, its clock, and the kernels on it.

A kernel does not own time; its machine does.  The machine holds the one event
loop (`kernel/clock.py`) and every kernel that runs on it, and `machine.run()`
runs them all: virtual time is shared, so no kernel can run on its own while
another waits.  A kernel made without a machine gets one of its own, which is
what `Kernel.run` runs.

Kernels on a machine run on bare metal unless they are given a CPU provider
(kernel/cpu.py).  `HostCpus` is the simplest one: N host CPUs shared round
robin among the vCPUs that ask, a fixed quantum at a time.  The hypervisor's
vCPU scheduler is another; this file knows nothing of it.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from kernel.clock import EventLoop, RealtimeLoop

if TYPE_CHECKING:  # kernel.kernel imports this module
    from kernel.config import KernelConfig
    from kernel.cpu import Cpu
    from kernel.kernel import Kernel

DEFAULT_QUANTUM_NS = 1_000_000


class Machine:
    """A host: one event loop, paced to the wall clock when `realtime`, and its kernels."""

    def __init__(self, *, realtime: bool = False, replay: bool = False) -> None:
        self.loop: EventLoop = RealtimeLoop() if realtime else EventLoop()
        self.kernels: list[Kernel] = []
        #: Replays a kernel's journal at full speed, realtime kernel or not
        #: (kernel/hypervisor/replay.py).
        self.replay = replay

    @property
    def realtime(self) -> bool:
        return isinstance(self.loop, RealtimeLoop)

    @property
    def now_ns(self) -> int:
        return self.loop.now_ns

    def attach(self, kernel: Kernel) -> None:
        """Put a kernel on this machine (`Kernel.__init__` does it)."""
        if kernel.config.realtime and not self.realtime and not self.replay:
            raise ValueError(f"kernel {kernel.name!r} is realtime, but its machine is not")
        self.kernels.append(kernel)

    def detach(self, kernel: Kernel) -> None:
        """Take a shut-down kernel off this machine (a destroyed guest)."""
        if not kernel.halted:
            raise ValueError(f"kernel {kernel.name!r} is still running: shut it down first")
        self.kernels.remove(kernel)

    def adopt(self, kernel: Kernel, seqs: list[int] | None = None) -> bool:
        """Move `kernel`, with its pending events, from its machine onto this
        one (a guest rebuilt on a machine of its own, joining its host's).
        `seqs` keep its events' places among equal times (`EventLoop.put_owned`);
        returns whether they could be kept."""
        old = kernel.machine
        entries = old.loop.take_owned(kernel)
        old.kernels.remove(kernel)
        kernel.machine, kernel.loop = self, self.loop
        self.kernels.append(kernel)
        return self.loop.put_owned(entries, kernel, seqs)

    def kernel(self, config: KernelConfig | None = None, **settings: Any) -> Kernel:
        """A new kernel on this machine, not booted: `Kernel(config, machine=self)`."""
        from kernel.kernel import Kernel

        return Kernel(config, machine=self, **settings)

    def boot(self, config: KernelConfig | None = None, **settings: Any) -> Kernel:
        """A new kernel on this machine, booted to its shell prompt."""
        return self.kernel(config, **settings).boot()

    def run(self, until: int | None = None) -> None:
        """Run every kernel on the machine until virtual time `until` (ns),
        until the last of them halts, or until nothing is left to do."""
        self.loop.run(until_ns=until)

    def kernel_halted(self, kernel: Kernel) -> None:
        """Called by a kernel that halts: a machine whose kernels have all
        halted stops its loop."""
        if all(k.halted for k in self.kernels):
            self.loop.stop()

    def shutdown(self) -> None:
        """Shut every kernel down.  Idempotent."""
        for kernel in self.kernels:
            kernel.shutdown()

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


class HostCpus:
    """A CPU provider: `cpus` host CPUs, granted round robin, one
    `quantum_ns` at a time, to the vCPUs that ask (in the order they ask)."""

    def __init__(self, machine: Machine, cpus: int, quantum_ns: int = DEFAULT_QUANTUM_NS) -> None:
        if type(cpus) is not int or cpus < 1:
            raise ValueError(f"cpus must be a positive integer, got {cpus!r}")
        if type(quantum_ns) is not int or quantum_ns < 1_000:
            raise ValueError(f"quantum_ns must be an integer of at least 1000, got {quantum_ns!r}")
        self.loop = machine.loop
        self.cpus = cpus
        self.quantum_ns = quantum_ns
        self.running: set[Cpu] = set()  # vCPUs holding a host CPU
        self.waiting: deque[Cpu] = deque()  # vCPUs that asked, first come first served
        self.grants = 0

    def request(self, vcpu: Cpu) -> None:
        self.waiting.append(vcpu)
        self._dispatch()

    def release(self, vcpu: Cpu) -> None:
        if vcpu in self.running:
            self.running.remove(vcpu)
        elif vcpu in self.waiting:
            self.waiting.remove(vcpu)
        self._dispatch()

    def _dispatch(self) -> None:
        while self.waiting and len(self.running) < self.cpus:
            vcpu = self.waiting.popleft()
            self.running.add(vcpu)
            self.grants += 1
            vcpu.grant(self.loop.now_ns + self.quantum_ns)

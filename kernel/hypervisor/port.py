"""Device queues between a guest and its host, in the VM's shared window.

Each VM has a window of guest-physical memory that it shares with the host
(`GuestMemory`, virtqueue.py), and the hypervisor lays one split ring per
device out in it: queue 0 is the GPU's.  The guest's driver task maps the
`GuestQueue` (its side of the memory, the ring's layout, the buffer space it
may use, and its interrupt notification) and kicks with the KICK hypercall.
The host's back-end task maps the `HostQueue`: the `Device` half of the ring,
the notification a kick signals, and the back end's own state, kept in plain
values so that a snapshot can carry it (snapshot.py).

What the host writes into the window reaches the guest only through
`JournaledMemory`, and its interrupts only through the guest kernel's
`device_interrupt`: both are told to the VM's journal, which is what makes a
guest replayable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from kernel.hypervisor.virtqueue import Device, Memory, Request, RingLayout, view

if TYPE_CHECKING:
    from kernel.ipc import Notification
    from kernel.kernel import Kernel

WINDOW_BYTES = 1 << 20  # each VM's shared window
QUEUE_SIZE = 64
GPU_QUEUE = 0
GPU_DEVICE = "gpuq"  # the name a guest's plan hands its GPU driver the queue by (config.DEVICES)

# The bits a back end's notification carries.
KICK = 1  # the guest published requests
QUIESCE = 2  # the hypervisor asks for a quiet queue (a snapshot is waiting)

#: The window's layout: the GPU ring at its start, then the buffers its driver uses.
GPU_LAYOUT = RingLayout.packed(0, QUEUE_SIZE)
GPU_BUFFERS = (4096 * ((GPU_LAYOUT.end + 4095) // 4096), WINDOW_BYTES // 2)


class JournaledMemory:
    """The host's view of a guest's window: every write is told to `note` first."""

    def __init__(self, memory: Memory, note: Callable[..., None]) -> None:
        self.memory = memory
        self.size = memory.size
        self.note = note

    def read(self, addr: int, n: int) -> bytes:
        return self.memory.read(addr, n)

    def view(self, addr: int, n: int) -> bytes | memoryview:
        """A view of the window, not a copy (reads are no input: not journaled)."""
        return view(self.memory, addr, n)

    def write(self, addr: int, data: bytes) -> None:
        data = bytes(data)
        self.memory.write(addr, data)  # bounds first: a refused write is no input
        self.note("dma", addr, data)


@attrs.define(eq=False)
class GuestQueue:
    """What the guest's driver maps: its side of one queue."""

    queue: int  # the KICK hypercall's argument
    memory: Memory
    layout: RingLayout
    buffers: tuple[int, int]  # (address, bytes) of window space for requests and answers
    irq: Notification  # signalled when the host has pushed used entries


class HostQueue:
    """What the host's back end maps: the device half of one queue.

    `process` is the KICK hypercall's doing: it only signals the back end,
    which takes the requests (`requests`) when it next runs on a host CPU
    and answers each (`complete`) once the host has served it."""

    def __init__(self, host: Kernel, queue: int, device: Device) -> None:
        self.host = host
        self.queue = queue
        self.device = device
        self.irq: Notification | None = None  # the back end's, bound when it starts
        #: The back end's state in plain values (ids, sizes, times): a snapshot
        #: keeps it, and a restored back end starts from it.
        self.state: dict[str, Any] = {}
        self.quiet = True  # the back end has nothing outstanding, here or on the host

    @property
    def broken(self) -> str | None:
        return self.device.broken

    def process(self) -> int:
        """A kick: wake the back end.  Nothing is served yet, so 0."""
        self.signal(KICK)
        return 0

    def signal(self, bits: int) -> None:
        self.quiet = self.quiet and not bits & KICK
        self.host.raise_irq(self.irq, bits)

    def requests(self) -> list[Request]:
        return self.device.take()

    def complete(
        self, request: Request, reply: bytes | BaseException, interrupt: bool = True
    ) -> None:
        self.device.finish(request, reply, interrupt)

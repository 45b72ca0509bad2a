"""Helpers for the virtqueue and hypercall tests (imported by name, so that no
other directory's conftest stands in for them): guest memory with a ring in
it, an echoing device, and a fake VM that offers what the dispatcher needs."""

from __future__ import annotations

from typing import Any

from kernel.hypervisor.hypercall import Balloon
from kernel.hypervisor.virtqueue import Device, Driver, GuestMemory, Request, RingLayout

MEMORY_BYTES = 64 * 1024
BUFFERS = 32 * 1024  # buffers live from here; the ring sits at 0


def upper(req: Request) -> bytes:
    """A device that answers each request in capitals."""
    return req.data.upper()


class Ring:
    """A queue in fresh guest memory, with both halves and a count of interrupts."""

    def __init__(self, size: int = 8, start_idx: int = 0, handler: Any = upper) -> None:
        self.memory = GuestMemory(MEMORY_BYTES)
        self.layout = RingLayout.packed(0, size)
        self.interrupts = 0
        self.device = Device(self.memory, self.layout, handler, self._irq, start_idx)
        self.driver = Driver(self.memory, self.layout, self.device.process, start_idx)

    def _irq(self) -> None:
        self.interrupts += 1

    def request(self, data: bytes, room: int = 64, slot: int = 0) -> tuple[int, bytes]:
        """One round trip: returns (used length, the bytes the device wrote)."""
        out, into = BUFFERS + slot * 256, BUFFERS + slot * 256 + 128
        self.memory.write(out, data)
        head = self.driver.add([(out, len(data))], [(into, room)])
        self.driver.kick()
        used = self.driver.used()
        assert [h for h, _ in used] == [head]
        length = used[0][1]
        return length, self.memory.read(into, length)


class FakeVm:
    """What a VM offers the hypercall dispatcher, and nothing else."""

    def __init__(self, name: str, modules: tuple[str, ...] = ("lithos", "clock")) -> None:
        self.name = name
        self.memory = GuestMemory(MEMORY_BYTES)
        self.layout = RingLayout.packed(0, 8)
        self.queues = {0: Device(self.memory, self.layout, upper)}
        self.gpu_queues = frozenset({0})
        self.balloon = Balloon(total_pages=16, min_pages=4)
        self.console: list[str] = []
        self.modules = modules
        self.chosen: list[str] = []

    def console_write(self, text: str) -> None:
        self.console.append(text)

    def choose_module(self, name: str) -> Any:
        if name == "explodes":
            raise RuntimeError("the module registry is on fire")
        if name not in self.modules:
            raise KeyError(name)
        self.chosen.append(name)
        return {"module": name}

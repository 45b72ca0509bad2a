"""The swap area: a file-backed store of page-sized slots.

The pager writes evicted pages here and reads them back on a fault.  It is a
temporary file by default, so a memory-hungry task works beyond physical
memory and its data survives the round trip byte for byte.
"""

from __future__ import annotations

import os
import tempfile

from kernel.errors import OutOfMemory


class SwapArea:
    def __init__(self, page_size: int, slots: int, path: str | None = None) -> None:
        self.page_size = page_size
        self.slots = slots
        if path is None:
            self._file = tempfile.TemporaryFile(prefix="malvos-swap-")
        else:
            self._file = open(path, "w+b")  # noqa: SIM115 - closed in close()
        self._fd = self._file.fileno()
        self._free: list[int] = []
        self._next = 0
        self.used = 0

    def alloc(self) -> int:
        if self._free:
            slot = self._free.pop()
        elif self._next < self.slots:
            slot = self._next
            self._next += 1
        else:
            raise OutOfMemory("swap area is full")
        self.used += 1
        return slot

    def free(self, slot: int) -> None:
        self._free.append(slot)
        self.used -= 1

    def write(self, slot: int, data: bytes | memoryview) -> None:
        os.pwrite(self._fd, data, slot * self.page_size)

    def read(self, slot: int) -> bytes:
        data = os.pread(self._fd, self.page_size, slot * self.page_size)
        return data.ljust(self.page_size, b"\0")

    def close(self) -> None:
        self._file.close()

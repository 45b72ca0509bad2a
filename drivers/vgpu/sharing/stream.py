"""What a stream's current kernel implies (`drivers/vgpu/sharing`).

A policy sees a stream through the `Stream` protocol (policy.py).  Two
harnesses give it streams, both views of the one loop's tables: the
simulation's tenants (sim.py's `Stream`) and the booted driver's programs'
streams (`drivers/vgpu/scheduler.py`'s `ProgramStream`).  What they share
is here: `StreamProgress` and `LoopStream`, and Orion's profile of a kernel.
"""

from __future__ import annotations

from typing import Any

from drivers.vgpu.presets import GpuSpec
from drivers.vgpu.sharing.compiled import (
    ST_GRID,
    ST_HAS_KERNEL,
    ST_HOST_NS,
    ST_INFLIGHT,
    ST_LAUNCHED,
    ST_POS,
    ST_READY_NS,
)
from drivers.vgpu.work import KernelDesc

__all__ = ["LoopStream", "StreamProgress", "kernel_profile", "kernel_sms"]


def kernel_sms(kernel: KernelDesc, spec: GpuSpec) -> int:
    """SMs the kernel fills alone: its blocks over the blocks one SM holds (Orion's SM_usage)."""
    return -(-kernel.grid_blocks * spec.sms_per_tpc // kernel.blocks_per_tpc)


def kernel_profile(kernel: KernelDesc) -> int:
    """Orion's profile: 1 compute-bound, 0 memory-bound, -1 unknown."""
    m = kernel.mem_fraction
    return 1 if m < 0.5 else 0 if m > 0.5 else -1


class StreamProgress:
    """What a stream's current kernel implies, from its `pos`, `grid`,
    `launched` and `host_ns` (each a view of the loop's stream table)."""

    pos: int
    grid: int
    launched: int
    host_ns: int

    def host_order(self, now_ns: int) -> int:
        """When the host enqueued the current kernel (not after now)."""
        return min(self.host_ns, now_ns)

    @property
    def active(self) -> bool:
        """The stream has work in progress (a request, or kernels queued)."""
        return self.pos >= 0

    @property
    def remaining(self) -> int:
        """Blocks of the current kernel not launched yet."""
        return self.grid - self.launched

    @property
    def kernel_pending(self) -> bool:
        """The current kernel has blocks the policy has not launched."""
        return self.pos >= 0 and self.launched < self.grid


class LoopStream(StreamProgress):
    """A stream as a policy sees it (the `Stream` protocol), read from its
    column (`index`) of the stream table of its run (`loop`)."""

    index: int
    loop: Any  # the run's tables (epoch_run.py's `LoopRun`), once it starts

    def _row(self, row: int) -> int:
        assert self.loop is not None, "the stream's run has not started"
        return self.loop.stream_row(self.index, row)

    @property
    def pos(self) -> int:
        """The current kernel's place in its request or stream, -1 between them."""
        return self._row(ST_POS) if self.loop is not None else -1

    @property
    def grid(self) -> int:
        return self._row(ST_GRID)

    @property
    def launched(self) -> int:
        """Blocks of the current kernel launched so far."""
        return self._row(ST_LAUNCHED)

    @property
    def inflight(self) -> int:
        """Atoms of the current kernel not yet complete."""
        return self._row(ST_INFLIGHT)

    @property
    def ready_ns(self) -> int:
        """When the current kernel became ready."""
        return self._row(ST_READY_NS)

    @property
    def host_ns(self) -> int:
        """When the host enqueued the current kernel."""
        return self._row(ST_HOST_NS)

    @property
    def inflight_masks(self) -> dict[int, int]:
        """Atom id -> TPC mask, for each of its atoms in flight."""
        assert self.loop is not None
        return {a: m for a, (m, _) in self.loop.inflight_of(self.index).items()}

    @property
    def inflight_priorities(self) -> dict[int, int]:
        assert self.loop is not None
        return {a: p for a, (_, p) in self.loop.inflight_of(self.index).items()}

    @property
    def has_kernel(self) -> bool:
        """The GPU has the stream's current kernel: its host launch has arrived."""
        return bool(self._row(ST_HAS_KERNEL))

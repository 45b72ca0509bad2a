"""Device memory of the virtual GPU: per-context allocation with quotas (`drivers/vgpu`).

The device's memory is one address range ``[0, capacity)``.  Allocation is
first fit over a free list kept sorted by address; a freed range is merged
with free neighbours at once, so free memory never stays split where it need
not be and fragmentation is only what live allocations cause.

Every allocation belongs to a context (a process or VM on the GPU).  A
context may have a quota; its usage counts allocated bytes after rounding up
to the alignment.  Handles are never reused, and a context can only name its
own handles: another context's handle is an unknown allocation to it.

Every request is checked before anything changes, so a failed request leaves
the allocator exactly as it was.
"""

from __future__ import annotations

import bisect

import attrs

from drivers.vgpu.errors import (
    InvalidArgument,
    OutOfMemory,
    QuotaExceeded,
    UnknownAllocation,
    UnknownContext,
)


@attrs.frozen
class Allocation:
    handle: int
    ctx: int
    offset: int
    size_bytes: int


@attrs.define
class _Context:
    quota_bytes: int | None
    used_bytes: int = 0
    handles: set[int] = attrs.Factory(set)


def _check_size(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidArgument(f"{what} must be a positive integer of bytes, got {value!r}")
    return value


class DeviceMemory:
    """First-fit allocator with coalescing and per-context quotas."""

    def __init__(self, capacity_bytes: int, alignment: int = 256) -> None:
        self.capacity_bytes = _check_size("memory capacity", capacity_bytes)
        self.alignment = _check_size("alignment", alignment)
        # Free ranges as parallel sorted lists of start offsets and sizes.
        self._free_start: list[int] = [0]
        self._free_size: list[int] = [capacity_bytes]
        self._allocs: dict[int, Allocation] = {}
        self._contexts: dict[int, _Context] = {}
        self._next_handle = 1

    # -- contexts ----------------------------------------------------------

    def add_context(self, ctx: int, quota_bytes: int | None = None) -> None:
        if ctx in self._contexts:
            raise InvalidArgument(f"memory context {ctx} already exists")
        if quota_bytes is not None:
            _check_size("quota", quota_bytes)
        self._contexts[ctx] = _Context(quota_bytes)

    def remove_context(self, ctx: int) -> None:
        """Free every allocation of `ctx` and forget it."""
        state = self._context(ctx)
        for handle in sorted(state.handles):
            self._release(self._allocs.pop(handle))
        del self._contexts[ctx]

    def _context(self, ctx: int) -> _Context:
        state = self._contexts.get(ctx)
        if state is None:
            raise UnknownContext(f"no GPU memory context {ctx!r}")
        return state

    # -- allocation --------------------------------------------------------

    def alloc(self, ctx: int, size_bytes: int) -> int:
        """Allocate `size_bytes` (rounded up to the alignment) for `ctx`; return a handle."""
        state = self._context(ctx)
        _check_size("allocation size", size_bytes)
        size = -(-size_bytes // self.alignment) * self.alignment
        if state.quota_bytes is not None and state.used_bytes + size > state.quota_bytes:
            raise QuotaExceeded(
                f"context {ctx}: allocating {size} bytes would use {state.used_bytes + size} "
                f"of its {state.quota_bytes}-byte quota"
            )
        index = next((i for i, free in enumerate(self._free_size) if free >= size), None)
        if index is None:
            raise OutOfMemory(
                f"context {ctx}: no free range of {size} bytes; {self.free_bytes} bytes are "
                f"free in all, the largest free range is {self.largest_free_bytes} bytes"
            )
        offset = self._free_start[index]
        if self._free_size[index] == size:
            del self._free_start[index], self._free_size[index]
        else:
            self._free_start[index] += size
            self._free_size[index] -= size
        handle = self._next_handle
        self._next_handle += 1
        self._allocs[handle] = Allocation(handle, ctx, offset, size)
        state.handles.add(handle)
        state.used_bytes += size
        return handle

    def free(self, ctx: int, handle: int) -> None:
        state = self._context(ctx)
        if handle not in state.handles:
            raise UnknownAllocation(f"context {ctx} holds no allocation {handle!r}")
        state.handles.remove(handle)
        self._release(self._allocs.pop(handle))

    def _release(self, alloc: Allocation) -> None:
        self._contexts[alloc.ctx].used_bytes -= alloc.size_bytes
        start, size = alloc.offset, alloc.size_bytes
        i = bisect.bisect_left(self._free_start, start)
        # Merge with the free range that ends where this one starts...
        if i > 0 and self._free_start[i - 1] + self._free_size[i - 1] == start:
            i -= 1
            start = self._free_start[i]
            size += self._free_size[i]
            del self._free_start[i], self._free_size[i]
        # ...and with the one that starts where it ends.
        if i < len(self._free_start) and self._free_start[i] == start + size:
            size += self._free_size[i]
            del self._free_start[i], self._free_size[i]
        self._free_start.insert(i, start)
        self._free_size.insert(i, size)

    # -- queries -----------------------------------------------------------

    def allocation(self, ctx: int, handle: int) -> Allocation:
        state = self._context(ctx)
        if handle not in state.handles:
            raise UnknownAllocation(f"context {ctx} holds no allocation {handle!r}")
        return self._allocs[handle]

    def allocations(self, ctx: int | None = None) -> list[Allocation]:
        """Live allocations (of one context, or all), by address."""
        if ctx is not None:
            self._context(ctx)
        allocs = [a for a in self._allocs.values() if ctx is None or a.ctx == ctx]
        return sorted(allocs, key=lambda a: a.offset)

    def used_bytes(self, ctx: int) -> int:
        return self._context(ctx).used_bytes

    def quota_bytes(self, ctx: int) -> int | None:
        return self._context(ctx).quota_bytes

    def free_ranges(self) -> list[tuple[int, int]]:
        """Free ``(offset, size)`` ranges by address; neighbours are always merged."""
        return list(zip(self._free_start, self._free_size, strict=True))

    @property
    def contexts(self) -> list[int]:
        return sorted(self._contexts)

    @property
    def free_bytes(self) -> int:
        return sum(self._free_size)

    @property
    def used_total_bytes(self) -> int:
        return self.capacity_bytes - self.free_bytes

    @property
    def largest_free_bytes(self) -> int:
        return max(self._free_size, default=0)

"""Errors raised by the virtual GPU (`drivers/vgpu`).

Every error the device model raises derives from `GpuError`, so the GPU driver
server can catch one family and turn it into an error reply for its client.
Errors that are bad arguments also derive from `ValueError`, and lookups of
things that do not exist from `LookupError`, so plain Python code can catch
them the usual way.  A raised error never leaves the device in a half-updated
state: every check runs before any state changes.
"""

from __future__ import annotations


class GpuError(Exception):
    """Base of every error raised by the virtual GPU."""


class InvalidArgument(GpuError, ValueError):
    """A size, mask, range, frequency or parameter is out of its domain."""


class UnknownContext(GpuError, LookupError):
    """A context id that was never created, or was destroyed."""


class UnknownKernel(GpuError, LookupError):
    """A kernel id that was never registered with this device."""


class UnknownAllocation(GpuError, LookupError):
    """A memory handle that does not name a live allocation of the context."""


class OutOfMemory(GpuError):
    """No free range of device memory is large enough for the request."""


class QuotaExceeded(OutOfMemory):
    """The allocation would take the context past its memory quota."""


class TraceFormatError(GpuError, ValueError):
    """A workload trace file is malformed; the message names file and row."""

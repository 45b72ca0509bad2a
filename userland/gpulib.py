"""The client side of the vGPU driver: what programs call to use the GPU.

`LaunchSpec` comes from the driver, imported on first use: the shell imports
this module for its `gpu` command, and an image without a GPU holds no
driver code (image/builder.py).
"""

from __future__ import annotations

from typing import Any

from kernel.traps import Call, Message
from userland.lib import UsageError

# LaunchSpec and LaunchGraph too, by __getattr__.
__all__ = ["GpuContext", "gpu_request", "open_context"]


def __getattr__(name: str) -> Any:
    if name in ("LaunchSpec", "LaunchGraph"):
        from drivers.vgpu import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class GpuRequestFailed(UsageError):
    """The GPU driver refused a request (its message says why)."""


def gpu_request(cap: int, label: str, payload: Any = None):
    """One request to the GPU driver; returns the answer's Received."""
    r = yield Call(cap, Message(label, payload))
    if r.msg.label == "error":
        raise GpuRequestFailed(r.msg.payload)
    return r


class GpuContext:
    """A context on the GPU, named by the context cap the driver handed out."""

    def __init__(self, ctx: int, cap: int) -> None:
        self.ctx = ctx
        self.cap = cap

    def alloc(self, size_bytes: int):
        return (yield from gpu_request(self.cap, "alloc", size_bytes)).msg.payload

    def launch(self, spec: Any):  # a drivers.vgpu.server.LaunchSpec
        """Launch a kernel; returns its id.  In a guest the launch is answered
        at once (drivers/vgpu/frontend.py): a refusal by the host comes with
        the context's next `sync`."""
        return (yield from gpu_request(self.cap, "launch", spec)).msg.payload

    def launch_graph(self, graph: Any):  # a drivers.vgpu.server.LaunchGraph
        """Launch a graph's kernels with one request; returns the last one's id."""
        return (yield from gpu_request(self.cap, "launch_graph", graph)).msg.payload

    def sync(self, kernel_id: int | None = None):
        return (yield from gpu_request(self.cap, "sync", kernel_id)).msg.payload

    def destroy(self):
        yield from gpu_request(self.cap, "destroy")


def open_context(proc, quota_bytes: int | None = None):
    """Create a context on the GPU the program was given (`proc.caps["gpu"]`)."""
    cap = proc.caps.get("gpu")
    if cap is None:
        raise UsageError("this machine has no GPU (boot with a gpu preset)")
    r = yield from gpu_request(cap, "create_context", quota_bytes)
    return GpuContext(r.msg.payload, r.caps[0])

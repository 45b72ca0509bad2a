"""The vGPU driver's timeline, for `trace` in the shell (kernel/trace.py).

While a trace records, the driver tells a `GpuTimeline` of every launch, and
of the device's clock, power and busy TPCs at each of its wakes.  At `trace
stop` the timeline becomes Chrome trace events beside the CPUs': one track
per context with a slice per kernel (from its launch to its completion), and
counters for the clock, the power and the busy TPCs.  Times are the kernel's
virtual time, which is the engine's.
"""

from __future__ import annotations

from typing import Any

import attrs

#: The Chrome trace's process id of the GPU (the kernel's CPUs are 1).
GPU_PID = 2


@attrs.frozen
class TimelineEvents:
    """`trace_stop`'s answer: the events, as an immutable message payload."""

    events: tuple[dict[str, Any], ...]


class GpuTimeline:
    def __init__(self, preset: str) -> None:
        self.preset = preset
        self.launches: list[tuple[int, int, str, int]] = []  # (kernel id, ctx, name, launch ns)
        self.counters: list[dict[str, Any]] = []
        self._last: tuple[int, int, float] | None = None

    def launched(self, kernel_id: int, ctx: int, name: str, now_ns: int) -> None:
        self.launches.append((kernel_id, ctx, name, now_ns))

    def sample(self, engine: Any) -> None:
        """The device's clock, busy TPCs and power now, if they changed."""
        state = (engine.clock_mhz, engine.busy_tpcs, round(engine.power_w, 1))
        if state == self._last:
            return
        self._last = state
        ts = engine.now_ns / 1e3
        for name, value in zip(("clock (MHz)", "busy TPCs", "power (W)"), state, strict=True):
            self.counters.append(
                {"ph": "C", "name": name, "pid": GPU_PID, "ts": ts, "args": {name: value}}
            )

    def events(self, engine: Any) -> TimelineEvents:
        """Everything recorded, with each kernel as a slice on its context's track."""
        out: list[dict[str, Any]] = [
            {"ph": "M", "name": "process_name", "pid": GPU_PID,
             "args": {"name": f"malvos vGPU ({self.preset})"}},
        ]  # fmt: skip
        for ctx in sorted({ctx for _, ctx, _, _ in self.launches}):
            out.append({"ph": "M", "name": "thread_name", "pid": GPU_PID, "tid": ctx,
                        "args": {"name": f"context {ctx}"}})  # fmt: skip
        for kernel_id, ctx, name, launch_ns in self.launches:
            done_ns = engine.kernel_done_ns(kernel_id)
            end_ns = engine.now_ns if done_ns is None else done_ns
            out.append({"ph": "X", "name": name, "cat": "gpu", "pid": GPU_PID, "tid": ctx,
                        "ts": launch_ns / 1e3, "dur": max(0, end_ns - launch_ns) / 1e3,
                        "args": {"kernel": kernel_id, "done": done_ns is not None}})  # fmt: skip
        return TimelineEvents(tuple(out + self.counters))

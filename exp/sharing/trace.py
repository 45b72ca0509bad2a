"""The Chrome / Perfetto trace of the GPU timeline (`exp/sharing`)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from drivers.vgpu.sharing import RunResult


def chrome_trace(runs: Sequence[tuple[str, RunResult]], tenant_names: Sequence[str]) -> dict:
    """A Chrome trace event file (Perfetto opens it): one process per run.

    Threads are tenants; each atom is a slice (args: TPC mask, TPC count,
    priority, stolen); the clock and TPCs per tenant are counters.
    """
    events: list[dict] = []
    for pid, (label, r) in enumerate(runs, start=1):
        events.append({"ph": "M", "name": "process_name", "pid": pid, "args": {"name": label}})
        for tid, name in enumerate(tenant_names, start=1):
            events.append(
                {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": name}}
            )
        start = min((a.launch_ns for a in r.atoms), default=0)
        end = max((a.done_ns for a in r.atoms), default=0)
        for a in r.atoms:
            events.append(
                {
                    "ph": "X",
                    "name": a.kernel,
                    "cat": "stolen" if a.stolen else "atom",
                    "pid": pid,
                    "tid": a.stream + 1,
                    "ts": a.launch_ns / 1e3,
                    "dur": (a.done_ns - a.launch_ns) / 1e3,
                    "args": {
                        "tpcs": a.mask.bit_count(),
                        "mask": hex(a.mask),
                        "priority": a.priority,
                        "stolen": a.stolen,
                    },
                }
            )
        for t, mhz in r.clocks:
            events.append(
                {"ph": "C", "name": "clock MHz", "pid": pid, "ts": t / 1e3, "args": {"MHz": mhz}}
            )
        for t, counts in r.allocation:
            if start <= t <= end:
                events.append(
                    {
                        "ph": "C",
                        "name": "TPCs in use",
                        "pid": pid,
                        "ts": t / 1e3,
                        "args": dict(zip(tenant_names, counts, strict=True)),
                    }
                )
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def write_trace(directory: str, trace: dict) -> None:
    with open(os.path.join(directory, "trace.json"), "w") as f:
        json.dump(trace, f, separators=(",", ":"))

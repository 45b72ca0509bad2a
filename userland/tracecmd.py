"""`trace`: record a Chrome / Perfetto trace of the running kernel.

``trace start`` starts recording the CPUs (kernel/trace.py) and, when the
machine has a GPU, the vGPU driver's timeline (drivers/vgpu/timeline.py);
``trace stop`` stops both and joins the GPU's events to the CPUs';
``trace save FILE`` writes ``{"traceEvents": [...]}``, which Perfetto
(ui.perfetto.dev) and chrome://tracing open.
"""

from __future__ import annotations

from kernel.traps import Trace
from userland.gpulib import gpu_request
from userland.lib import UsageError, println

USAGE = "usage: trace start | trace stop | trace save FILE"


def cmd_trace(sh, args):
    """trace start|stop|save FILE: a Chrome/Perfetto trace of the CPUs and the GPU"""
    op = args[0] if args else ""
    if op not in ("start", "stop", "save") or len(args) != (2 if op == "save" else 1):
        raise UsageError(USAGE)
    gpu = sh.proc.caps.get("gpu")
    if op == "start":
        yield Trace("start")
        if gpu is not None:
            yield from gpu_request(gpu, "trace_start")
        yield from println(sh.proc, "trace: recording" + (" (CPUs and GPU)" if gpu else ""))
    elif op == "stop":
        events = yield Trace("stop")
        if gpu is not None:
            timeline = (yield from gpu_request(gpu, "trace_stop")).msg.payload
            events = yield Trace("add", timeline.events)
        yield from println(sh.proc, f"trace: stopped, {events} events")
    else:
        events = yield Trace("save", args[1])
        yield from println(sh.proc, f"trace: {events} events written to {args[1]}")


COMMANDS = {"trace": cmd_trace}

"""Inference on the vGPU: `inference-server`, which `malv serve` puts behind
MLPerf LoadGen (exp/loadgen), and `gpu-train`, a best-effort training job
to run beside it.

A model is an Orion-format kernel profile (a path) or a synthetic preset
(drivers/vgpu/traces.py); running it once launches its kernels in order on
one stream of the program's GPU context, with one request (a launch graph,
as a CUDA graph is), and waits for the last.  The server
launches at high priority (the driver's policies take a priority above 0 as
high priority), the training job at 0, best effort.

The server's queries come from the `queries` device (exp/loadgen/port.py,
mapped with MapDevice), which interrupts it on `irq` when queries arrive;
it answers each on the same device, with the virtual time its model's last
kernel completed, or with why it could not be served.  With ``-s N`` it
serves N queries at once: N-1 child tasks share its GPU context, each
serving on a stream of its own.
"""

from __future__ import annotations

import functools
from typing import Any

from kernel.traps import MapDevice, Spawn, Wait
from userland.gpulib import GpuContext, gpu_request, open_context
from userland.lib import UsageError, int_arg, println, program

HIGH_PRIORITY = 1
BEST_EFFORT = 0


def load_model(
    spec: str, priority: int, stream: int = 0, device: str | None = None
) -> tuple[str, Any]:
    """A model's name and its kernels as one launch graph on `stream`, at
    `priority`; a profile measured on another GPU is carried to `device`
    (a preset's name, the booted vGPU's: traces.carry_to)."""
    from drivers.vgpu.errors import GpuError
    from drivers.vgpu.presets import get_preset
    from drivers.vgpu.traces import load_workload
    from userland.gpulib import LaunchGraph, LaunchSpec

    try:
        simulated_on = None if device is None else get_preset(device)
        workload = load_workload(spec, simulated_on=simulated_on)
    except GpuError as exc:
        raise UsageError(str(exc)) from None
    launches = (
        LaunchSpec(
            k.name,
            grid_blocks=k.grid_blocks,
            block_us=k.block_duration_ns / 1000,
            blocks_per_tpc=k.blocks_per_tpc,
            mem_fraction=k.mem_fraction,
            priority=priority,
            stream=stream,
        )  # fmt: skip
        for k in workload.kernels
    )
    return workload.name, LaunchGraph(launches)


def _device(proc):
    """The booted vGPU's preset name (the driver's `stats`)."""
    answer = yield from gpu_request(proc.caps["gpu"], "stats")
    return answer.msg.payload.preset


def run_model(ctx, graph: Any):
    """Launch a model's kernels on one stream and wait; returns when the last completed (ns)."""
    return (yield from ctx.sync((yield from ctx.launch_graph(graph))))


def serve_queries(proc, ctx, models: dict[str, Any]):
    """Take queries from the `queries` device and answer each, one at a time,
    until the device has no server any more."""
    port = yield MapDevice(proc.caps["queries"])
    while port.down is None:
        query = port.take()
        if query is None:
            yield Wait(proc.caps["irq"])
            continue
        graph = models.get(query.model)
        if graph is None:
            port.fail(query, f"model {query.model!r} is not loaded")
            continue
        port.complete(query, (yield from run_model(ctx, graph)))


def _server_args(argv: tuple[str, ...]) -> tuple[int, tuple[str, ...]]:
    """``[-s STREAMS] MODEL...`` as (streams, models)."""
    streams = 1
    if argv[:1] == ("-s",):
        streams = int_arg(argv, 1, "streams", minimum=1)
        argv = argv[2:]
    if not argv:
        raise UsageError("usage: inference-server [-s STREAMS] MODEL...")
    return streams, tuple(argv)


@program
def inference_server(proc):
    """inference-server [-s STREAMS] MODEL...: serve queries from the `queries`
    device with the models named (profile paths or presets), up to STREAMS
    (default 1) at a time, each on a stream of its own of one GPU context."""
    streams, specs = _server_args(tuple(proc.argv))
    if "queries" not in proc.caps or "irq" not in proc.caps:
        raise UsageError("no queries device (malv serve starts the server with one)")
    ctx = yield from open_context(proc)
    device = yield from _device(proc)
    by_stream = [
        dict(load_model(spec, HIGH_PRIORITY, i, device) for spec in specs) for i in range(streams)
    ]
    for graph in by_stream[0].values():
        # A first run of each model: the device's first use (compiling or
        # loading the engine) is not charged to the first query.
        yield from run_model(ctx, graph)
    caps = {"queries": proc.caps["queries"], "irq": proc.caps["irq"], "ctx": ctx.cap}
    for i in range(1, streams):
        stream = functools.partial(_stream_server, ctx=ctx.ctx, models=by_stream[i])
        yield Spawn(stream, caps=caps, name=f"{proc.name}/{i}")
    port = yield MapDevice(proc.caps["queries"])
    port.ready(tuple(by_stream[0]))
    yield from serve_queries(proc, ctx, by_stream[0])


def _stream_server(proc, ctx: int, models: dict[str, Any]):
    """One more stream of the server: its context, by the cap it was handed."""
    yield from serve_queries(proc, GpuContext(ctx, proc.caps["ctx"]), models)


@program
def gpu_train(proc):
    """gpu-train MODEL [ITERATIONS]: run a model's kernels iteration after
    iteration, best effort (ITERATIONS 0, the default: until killed)."""
    if not proc.argv:
        raise UsageError("usage: gpu-train MODEL [ITERATIONS]")
    iterations = int_arg(proc.argv, 1, "iterations", default=0, minimum=0)
    ctx = yield from open_context(proc)
    name, graph = load_model(proc.argv[0], BEST_EFFORT, device=(yield from _device(proc)))
    done = 0
    while iterations == 0 or done < iterations:
        yield from run_model(ctx, graph)
        done += 1
    yield from ctx.destroy()
    yield from println(proc, f"gpu-train: {done} iterations of {name}")

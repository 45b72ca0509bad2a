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
kernel completed, or with why it could not be served.
"""

from __future__ import annotations

from typing import Any

from kernel.traps import MapDevice, Wait
from userland.gpulib import open_context
from userland.lib import UsageError, int_arg, println, program

HIGH_PRIORITY = 1
BEST_EFFORT = 0


def load_model(spec: str, priority: int) -> tuple[str, Any]:
    """A model's name and its kernels as one launch graph, at `priority`."""
    from drivers.vgpu.errors import GpuError
    from drivers.vgpu.traces import load_workload
    from userland.gpulib import LaunchGraph, LaunchSpec

    try:
        workload = load_workload(spec)
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
        )  # fmt: skip
        for k in workload.kernels
    )
    return workload.name, LaunchGraph(launches)


def run_model(ctx, graph: Any):
    """Launch a model's kernels on one stream and wait; returns when the last completed (ns)."""
    return (yield from ctx.sync((yield from ctx.launch_graph(graph))))


@program
def inference_server(proc):
    """inference-server MODEL...: serve queries from the `queries` device with
    the models named (profile paths or presets), one query at a time."""
    if not proc.argv:
        raise UsageError("usage: inference-server MODEL...")
    if "queries" not in proc.caps or "irq" not in proc.caps:
        raise UsageError("no queries device (malv serve starts the server with one)")
    models = dict(load_model(spec, HIGH_PRIORITY) for spec in proc.argv)
    port = yield MapDevice(proc.caps["queries"])
    ctx = yield from open_context(proc)
    for graph in models.values():
        # A first run of each model: the device's first use (compiling or
        # loading the engine) is not charged to the first query.
        yield from run_model(ctx, graph)
    port.ready(tuple(models))
    while True:
        query = port.take()
        if query is None:
            yield Wait(proc.caps["irq"])
            continue
        graph = models.get(query.model)
        if graph is None:
            port.fail(query, f"model {query.model!r} is not loaded")
            continue
        port.complete(query, (yield from run_model(ctx, graph)))


@program
def gpu_train(proc):
    """gpu-train MODEL [ITERATIONS]: run a model's kernels iteration after
    iteration, best effort (ITERATIONS 0, the default: until killed)."""
    if not proc.argv:
        raise UsageError("usage: gpu-train MODEL [ITERATIONS]")
    name, graph = load_model(proc.argv[0], BEST_EFFORT)
    iterations = int_arg(proc.argv, 1, "iterations", default=0, minimum=0)
    ctx = yield from open_context(proc)
    done = 0
    while iterations == 0 or done < iterations:
        yield from run_model(ctx, graph)
        done += 1
    yield from ctx.destroy()
    yield from println(proc, f"gpu-train: {done} iterations of {name}")

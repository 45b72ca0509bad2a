"""The vGPU inference back end for kernel-space ML (LAKE on the virtual GPU).

The kernel's MLaaS core batches the inference requests of advisor modules
and asks its crossover policy where each batch runs (`kernel.mlaas.inference`).
This back end is the GPU side: it runs a batch as one functional MLP kernel
(`functional.mlp_kernel`, layers fused) on a context of a `VirtualGpu`, so
the vGPU both computes the answer and charges the time.

Cost of a batch, in virtual ns::

    REMOTE_CALL_NS                        the kernel -> user-space API remoting
                                          round trip that launches and syncs (LAKE §4.1)
  + 2 * COPY_CALL_NS + bytes / PCIE_GBPS  features to the device, outputs back
  + the kernel's time in the engine       from launch to completion, so other
                                          contexts' work on the device slows it

Weights stay resident on the device; only features and outputs cross PCIe.
The constants are model parameters: a netlink round trip to LAKE's user
daemon plus a CUDA launch and synchronize is tens of microseconds, a remoted
cuMemcpy some microseconds, and PCIe 3.0 x16 moves about 12 GB/s.

Contention (LAKE §6): `contention()` reports the device's processes (live
contexts, as nvidia-smi lists them) and its utilisation (the share of TPCs
busy right now), after bringing the device up to the kernel's time.  The
crossover policy stays on the CPU when both are high.

The back end reaches the device through a port (`GpuPort`), and never runs
an engine someone else owns.  In a booted system the vGPU driver gives it
one (server.py, `InferencePort`): the driver's scheduler takes each batch's
kernel as a kernel of the inference context's stream, the sharing policy in
charge schedules it like any program's, and the scheduler runs the device,
with every other context's completions and timers in order, until it
completes.  Alone (an experiment's `VgpuInferenceBackend(Engine(...))`), it
drives a private engine through an `EnginePort`, and releases what it is
done with (api.py, "Ids and memory"): its kernels once their result is
read, and every completion, its own and those of other work an experiment
launched on that engine, which no one else waits for.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from drivers.vgpu.api import VirtualGpu
from drivers.vgpu.engine import Engine
from drivers.vgpu.functional import dense_kernel, mlp_kernel
from drivers.vgpu.presets import GpuSpec
from drivers.vgpu.work import KernelDesc
from kernel.mlaas.inference import Model, finish_output

REMOTE_CALL_NS = 40_000
COPY_CALL_NS = 8_000
PCIE_GBPS = 12.0  # bytes per ns


class GpuPort(Protocol):
    """What the back end uses of a device: the driver's port, or an `EnginePort`."""

    @property
    def spec(self) -> GpuSpec: ...

    @property
    def now_ns(self) -> int:
        """The device's time."""
        ...

    def create_context(self) -> int:
        """A context for the back end's kernels."""
        ...

    def run_kernel(self, ctx: int, desc: KernelDesc, priority: int, now_ns: int) -> tuple[int, Any]:
        """Launch `desc` on `ctx` at the kernel's time `now_ns` (or at the
        device's, if it is ahead) and run the device until it completes;
        return its completion time and its result."""
        ...

    def contention(self, now_ns: int) -> tuple[int, float]:
        """(live contexts, share of TPCs busy) once the device is at `now_ns`."""
        ...


class EnginePort:
    """A private engine that only the back end drives (an experiment's).

    Completions of other work on it (an experiment's background load,
    launched on the engine directly) have no one to go to: they are released."""

    def __init__(self, engine: VirtualGpu) -> None:
        self.engine = engine

    @property
    def spec(self) -> GpuSpec:
        return self.engine.spec

    @property
    def now_ns(self) -> int:
        return self.engine.now_ns

    def create_context(self) -> int:
        return self.engine.create_context()

    def _advance(self, until_ns: int | None) -> None:
        done = self.engine.advance(until_ns)
        if done:
            self.engine.release_atoms([c.atom_id for c in done])

    def _catch_up(self, now_ns: int) -> None:
        """Bring the device to the kernel's time (it may already be ahead: busy)."""
        while self.engine.now_ns < now_ns:
            self._advance(now_ns)

    def run_kernel(self, ctx: int, desc: KernelDesc, priority: int, now_ns: int) -> tuple[int, Any]:
        self._catch_up(now_ns)
        gpu = self.engine
        kernel_id = gpu.add_kernel(desc)
        gpu.launch(ctx, kernel_id, priority=priority)
        done_ns = gpu.kernel_done_ns(kernel_id)
        while done_ns is None:
            self._advance(None)
            done_ns = gpu.kernel_done_ns(kernel_id)
        result = gpu.kernel_result(kernel_id)
        gpu.release_kernel(kernel_id)
        return done_ns, result

    def contention(self, now_ns: int) -> tuple[int, float]:
        self._catch_up(now_ns)
        return len(self.engine.contexts), self.engine.busy_tpcs / self.engine.spec.n_tpcs


class VgpuInferenceBackend:
    kind = "vgpu"

    def __init__(
        self,
        gpu: VirtualGpu | None = None,
        *,
        port: GpuPort | None = None,
        clock: Callable[[], int] | None = None,
        priority: int = 0,
    ) -> None:
        """Run on `port` (the driver's), else on the private engine `gpu` (a new a100's)."""
        if port is not None and gpu is not None:
            raise ValueError("a back end runs on a port or on its own engine, not both")
        self.port: GpuPort = port if port is not None else EnginePort(gpu or Engine("a100"))
        self.spec = self.port.spec
        self.ctx = self.port.create_context()
        self.clock = clock or (lambda: self.port.now_ns)
        self.priority = priority
        self.batches = 0

    # -- the cost model ---------------------------------------------------------

    @staticmethod
    def transfer_ns(model: Model, rows: int) -> float:
        moved = rows * (model.inputs + model.outputs) * 4
        return 2 * COPY_CALL_NS + moved / PCIE_GBPS

    def _shapes(self, model: Model, rows: int) -> list[tuple[int, int, int]]:
        return [(rows, a, b) for a, b in zip(model.layers, model.layers[1:], strict=False)]

    def estimate_ns(self, model: Model, rows: int) -> float:
        """Uncontended: the kernel alone on the whole device at the maximum clock."""
        desc = dense_kernel("estimate", self.spec, self._shapes(model, rows))
        return (
            REMOTE_CALL_NS
            + self.transfer_ns(model, rows)
            + desc.isolated_duration_ns(self.spec.n_tpcs)
        )

    # -- running a batch --------------------------------------------------------

    def run(self, model: Model, x: np.ndarray, now_ns: int) -> tuple[np.ndarray, int]:
        weights = [w for w, _ in model.weights]
        biases = [b for _, b in model.weights]
        desc = mlp_kernel(x, weights, biases, self.spec, priority=self.priority)
        done_ns, result = self.port.run_kernel(self.ctx, desc, self.priority, now_ns)
        out = finish_output(np.asarray(result), model.output).astype(np.float32)
        self.batches += 1
        # The kernel's time in the engine: from the kernel's time (the device
        # may be ahead, busy) to its completion, other contexts' work included.
        cost = REMOTE_CALL_NS + self.transfer_ns(model, len(x)) + (done_ns - now_ns)
        return out, int(math.ceil(cost))

    def contention(self) -> tuple[int, float]:
        return self.port.contention(self.clock())


def attach(kernel, gpu: VirtualGpu | None = None, *, priority: int = 0) -> VgpuInferenceBackend:
    """Register a vGPU inference back end on the private engine `gpu` with
    `kernel`'s MLaaS core and return it."""
    return attach_to_core(kernel.mlaas, gpu, priority=priority)


def attach_to_core(
    core,
    gpu: VirtualGpu | None = None,
    *,
    port: GpuPort | None = None,
    priority: int = 0,
) -> VgpuInferenceBackend:
    """Register a vGPU inference back end with an MLaaS core: on the driver's
    `port` (what the GPU driver server does at start, with the cap to the
    core it was given), else on the private engine `gpu`."""
    kernel = core.kernel
    backend = VgpuInferenceBackend(
        gpu, port=port, clock=lambda: kernel.loop.now_ns, priority=priority
    )
    core.register_backend("vgpu", backend)
    return backend

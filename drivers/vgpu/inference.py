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

The back end drives the engine it is given: share that engine only with
work that is driven from the same event loop (an experiment's load
generator, the GPU driver on the same kernel).  It releases what it is done
with (api.py, "Ids and memory"): its atoms once complete, each batch's
kernel once its result is read, and other contexts' completions it has no
one to hand to; those it hands over (`on_foreign`) are the receiver's.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from drivers.vgpu.api import VirtualGpu
from drivers.vgpu.engine import Engine
from drivers.vgpu.functional import dense_kernel, mlp_kernel
from kernel.mlaas.inference import Model, finish_output

REMOTE_CALL_NS = 40_000
COPY_CALL_NS = 8_000
PCIE_GBPS = 12.0  # bytes per ns


class VgpuInferenceBackend:
    kind = "vgpu"

    def __init__(
        self,
        gpu: VirtualGpu | None = None,
        *,
        clock: Callable[[], int] | None = None,
        priority: int = 0,
        on_foreign: Callable[[list], None] | None = None,
    ) -> None:
        """`on_foreign` receives the completions of other contexts' atoms that
        this back end's runs of a shared engine return (the driver's)."""
        self.gpu = gpu if gpu is not None else Engine("a100")
        self.ctx = self.gpu.create_context()
        self.clock = clock or (lambda: self.gpu.now_ns)
        self.priority = priority
        self.on_foreign = on_foreign
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
        desc = dense_kernel("estimate", self.gpu.spec, self._shapes(model, rows))
        return (
            REMOTE_CALL_NS
            + self.transfer_ns(model, rows)
            + desc.isolated_duration_ns(self.gpu.spec.n_tpcs)
        )

    # -- running a batch --------------------------------------------------------

    def _advance(self, until_ns: int | None) -> None:
        done = self.gpu.advance(until_ns)
        if not done:
            return
        foreign = [c for c in done if c.ctx != self.ctx]
        if foreign and self.on_foreign is not None:
            self.on_foreign(foreign)  # the receiver releases them
            self.gpu.release_atoms([c.atom_id for c in done if c.ctx == self.ctx])
        else:
            self.gpu.release_atoms([c.atom_id for c in done])

    def _catch_up(self, now_ns: int) -> None:
        """Bring the device to the kernel's time (it may already be ahead: busy)."""
        while self.gpu.now_ns < now_ns:
            self._advance(now_ns)

    def run(self, model: Model, x: np.ndarray, now_ns: int) -> tuple[np.ndarray, int]:
        self._catch_up(now_ns)
        weights = [w for w, _ in model.weights]
        biases = [b for _, b in model.weights]
        desc = mlp_kernel(x, weights, biases, self.gpu.spec, priority=self.priority)
        start_ns = max(now_ns, self.gpu.now_ns)
        kernel_id = self.gpu.add_kernel(desc)
        self.gpu.launch(self.ctx, kernel_id)
        done_ns = self.gpu.kernel_done_ns(kernel_id)
        while done_ns is None:
            self._advance(None)
            done_ns = self.gpu.kernel_done_ns(kernel_id)
        result = self.gpu.kernel_result(kernel_id)
        self.gpu.release_kernel(kernel_id)
        out = finish_output(np.asarray(result), model.output).astype(np.float32)
        self.batches += 1
        cost = (
            REMOTE_CALL_NS
            + self.transfer_ns(model, len(x))
            + (done_ns - start_ns)
            + (start_ns - now_ns)
        )
        return out, int(math.ceil(cost))

    def contention(self) -> tuple[int, float]:
        self._catch_up(self.clock())
        return len(self.gpu.contexts), self.gpu.busy_tpcs / self.gpu.spec.n_tpcs


def attach(kernel, gpu: VirtualGpu | None = None, *, priority: int = 0) -> VgpuInferenceBackend:
    """Register a vGPU inference back end with `kernel`'s MLaaS core and return it."""
    return attach_to_core(kernel.mlaas, gpu, priority=priority)


def attach_to_core(
    core,
    gpu: VirtualGpu | None = None,
    *,
    priority: int = 0,
    on_foreign: Callable[[list], None] | None = None,
) -> VgpuInferenceBackend:
    """Register a vGPU inference back end with an MLaaS core (what the GPU
    driver server does at start, with the cap to the core it was given)."""
    kernel = core.kernel
    backend = VgpuInferenceBackend(
        gpu, clock=lambda: kernel.loop.now_ns, priority=priority, on_foreign=on_foreign
    )
    core.register_backend("vgpu", backend)
    return backend

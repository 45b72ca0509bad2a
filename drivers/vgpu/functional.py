"""Functional execution: vGPU kernels that really compute (`drivers/vgpu`).

A functional kernel is a `KernelDesc` whose ``fn`` computes the kernel's
result with a numba function.  The timing model charges its time like any
other kernel's; when its last block completes the device calls ``fn`` and
keeps the value (`VirtualGpu.kernel_result`).  Kernel-space ML (LAKE-style
batched inference for MLaaS modules) runs its models this way.

Timing of a dense kernel (`dense_kernel`), from its FLOPs and bytes
--------------------------------------------------------------------
Each thread block computes one TILE x TILE tile of an output, so a product
with an ``m x n`` output has ``ceil(m/TILE) * ceil(n/TILE)`` blocks, four
resident per TPC.  Alone on the whole device at the maximum clock::

    compute_ns = flops / (peak_fp32_tflops * 1e3 * EFFICIENCY)    (FLOP per ns)
    memory_ns  = bytes / bandwidth_gbps                           (bytes per ns)
    waves      = ceil(blocks / (n_tpcs * BLOCKS_PER_TPC))
    block_duration_ns = ceil((compute_ns + memory_ns) / waves)
    mem_fraction      = memory_ns / (compute_ns + memory_ns)

with bytes the float32 operands read and results written once.  Compute and
memory are not overlapped: the figure is a plain roofline sum, an upper
bound for small kernels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import numpy as np
from numba import njit

from drivers.vgpu.errors import InvalidArgument
from drivers.vgpu.presets import GpuSpec
from drivers.vgpu.work import KernelDesc

TILE = 64
BLOCKS_PER_TPC = 4
#: Share of peak FP32 throughput a dense kernel achieves.
EFFICIENCY = 0.7
BYTES_PER_VALUE = 4


@njit(cache=True)
def _matmul(a, b):
    m, k = a.shape
    n = b.shape[1]
    out = np.zeros((m, n), dtype=np.float64)
    for i in range(m):  # i-p-j order: the inner loop walks rows of b and out
        for p in range(k):
            aip = a[i, p]
            for j in range(n):
                out[i, j] += aip * b[p, j]
    return out


@njit(cache=True)
def _dense(x, w, bias, relu):
    out = _matmul(x, w)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            v = out[i, j] + bias[j]
            out[i, j] = max(v, 0.0) if relu else v
    return out


def _as_matrix(name: str, value) -> np.ndarray:
    array = np.ascontiguousarray(value, dtype=np.float64)
    if array.ndim != 2 or 0 in array.shape:
        raise InvalidArgument(f"{name} must be a non-empty 2-D array, got shape {array.shape}")
    return array


def matmul(a, b) -> np.ndarray:
    """``a @ b`` in float64, computed by the numba kernel."""
    a, b = _as_matrix("a", a), _as_matrix("b", b)
    if a.shape[1] != b.shape[0]:
        raise InvalidArgument(f"cannot multiply {a.shape} by {b.shape}")
    return _matmul(a, b)


def _check_mlp(x, weights: Sequence, biases: Sequence):
    x = _as_matrix("x", x)
    if not weights or len(weights) != len(biases):
        raise InvalidArgument("an MLP needs at least one layer and one bias per weight matrix")
    ws = [_as_matrix(f"weights[{i}]", w) for i, w in enumerate(weights)]
    bs = [np.ascontiguousarray(b, dtype=np.float64) for b in biases]
    width = x.shape[1]
    for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
        if w.shape[0] != width:
            raise InvalidArgument(f"layer {i}: weights {w.shape} do not take inputs of {width}")
        if b.shape != (w.shape[1],):
            raise InvalidArgument(f"layer {i}: bias shape {b.shape}, expected ({w.shape[1]},)")
        width = w.shape[1]
    return x, ws, bs


def mlp_forward(x, weights: Sequence, biases: Sequence) -> np.ndarray:
    """An MLP's forward pass: ReLU after every layer but the last."""
    x, ws, bs = _check_mlp(x, weights, biases)
    for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
        x = _dense(x, w, b, i < len(ws) - 1)
    return x


# -- kernels: the timing model's view ----------------------------------------


def dense_kernel(
    name: str, spec: GpuSpec, shapes: Sequence[tuple[int, int, int]], fn=None, priority: int = 0
) -> KernelDesc:
    """A kernel doing the ``(m, k, n)`` products in `shapes`, timed as documented above."""
    flops = sum(2 * m * k * n for m, k, n in shapes)
    values = sum(m * k + k * n + m * n for m, k, n in shapes)
    blocks = sum(math.ceil(m / TILE) * math.ceil(n / TILE) for m, _, n in shapes)
    compute_ns = flops / (spec.peak_fp32_tflops * 1e3 * EFFICIENCY)
    memory_ns = values * BYTES_PER_VALUE / spec.bandwidth_gbps
    waves = math.ceil(blocks / (spec.n_tpcs * BLOCKS_PER_TPC))
    return KernelDesc(
        name=name,
        grid_blocks=blocks,
        blocks_per_tpc=BLOCKS_PER_TPC,
        block_duration_ns=max(1, math.ceil((compute_ns + memory_ns) / waves)),
        mem_fraction=memory_ns / (compute_ns + memory_ns),
        priority=priority,
        fn=fn,
    )


def matmul_kernel(a, b, spec: GpuSpec, priority: int = 0) -> KernelDesc:
    """A kernel whose result is ``a @ b``."""
    a, b = _as_matrix("a", a), _as_matrix("b", b)
    if a.shape[1] != b.shape[0]:
        raise InvalidArgument(f"cannot multiply {a.shape} by {b.shape}")
    (m, k), n = a.shape, b.shape[1]
    return dense_kernel(f"matmul{m}x{k}x{n}", spec, [(m, k, n)], partial(_matmul, a, b), priority)


def mlp_kernel(x, weights: Sequence, biases: Sequence, spec: GpuSpec, priority: int = 0):
    """One kernel for a whole MLP forward pass (its layers fused)."""
    x, ws, bs = _check_mlp(x, weights, biases)
    shapes = [(x.shape[0], w.shape[0], w.shape[1]) for w in ws]
    fn = partial(mlp_forward, x, ws, bs)
    return dense_kernel(f"mlp{len(ws)}x{x.shape[0]}", spec, shapes, fn, priority)

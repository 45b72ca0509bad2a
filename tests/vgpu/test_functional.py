"""Functional kernels compute real results, and the timing model charges their time."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.vgpu.engine import Engine
from drivers.vgpu.errors import InvalidArgument
from drivers.vgpu.functional import (
    BLOCKS_PER_TPC,
    EFFICIENCY,
    TILE,
    dense_kernel,
    matmul,
    matmul_kernel,
    mlp_forward,
    mlp_kernel,
)
from drivers.vgpu.presets import a100


def numpy_mlp(x, weights, biases):
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        x = x @ w + b
        if i < len(weights) - 1:
            x = np.maximum(x, 0.0)
    return x


def random_mlp(rng, batch, widths):
    x = rng.normal(size=(batch, widths[0]))
    weights = [rng.normal(size=(a, b)) for a, b in zip(widths, widths[1:], strict=False)]
    biases = [rng.normal(size=b) for b in widths[1:]]
    return x, weights, biases


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_matmul_matches_numpy(m, k, n, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(m, k)), rng.normal(size=(k, n))
    np.testing.assert_allclose(matmul(a, b), a @ b, rtol=1e-10, atol=1e-10)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 16), st.lists(st.integers(1, 24), min_size=2, max_size=5), st.integers(0, 99))
def test_mlp_forward_matches_numpy_with_relu_between_layers(batch, widths, seed):
    x, weights, biases = random_mlp(np.random.default_rng(seed), batch, widths)
    np.testing.assert_allclose(
        mlp_forward(x, weights, biases), numpy_mlp(x, weights, biases), rtol=1e-10, atol=1e-10
    )


def test_a_functional_kernel_yields_its_result_when_it_completes_and_is_charged_its_time():
    rng = np.random.default_rng(1)
    x, weights, biases = random_mlp(rng, 256, [512, 1024, 1024, 10])
    kernel = mlp_kernel(x, weights, biases, a100)
    gpu = Engine(a100)
    ctx = gpu.create_context()
    gpu.launch(ctx, kernel)
    with pytest.raises(InvalidArgument, match="no result"):
        gpu.kernel_result(0)
    (done,) = gpu.advance()
    assert done.kernel_done
    np.testing.assert_allclose(
        gpu.kernel_result(done.kernel_id), numpy_mlp(x, weights, biases), rtol=1e-10
    )
    # Alone on the device it takes what the roofline formula says.
    flops = 2 * 256 * (512 * 1024 + 1024 * 1024 + 1024 * 10)
    assert done.time_ns >= flops / (a100.peak_fp32_tflops * 1e3 * EFFICIENCY)
    assert done.time_ns == pytest.approx(kernel.isolated_duration_ns(a100.n_tpcs), rel=0.01)


def test_dense_kernel_grid_is_one_block_per_output_tile():
    a, b = np.ones((130, 10)), np.ones((10, 65))
    kernel = matmul_kernel(a, b, a100)
    assert kernel.grid_blocks == math.ceil(130 / TILE) * math.ceil(65 / TILE) == 6
    assert kernel.blocks_per_tpc == BLOCKS_PER_TPC and 0.0 < kernel.mem_fraction < 1.0
    assert kernel.fn() == pytest.approx(a @ b)


def test_a_large_matmul_is_compute_bound_and_takes_milliseconds():
    n = 4096
    kernel = dense_kernel("gemm", a100, [(n, n, n)])
    expected_ms = 2 * n**3 / (19.5e12 * EFFICIENCY) * 1e3
    assert kernel.mem_fraction < 0.05
    assert kernel.isolated_duration_ns(a100.n_tpcs) / 1e6 == pytest.approx(expected_ms, rel=0.05)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.ones((2, 3)), np.ones((4, 2))), "cannot multiply"),
        ((np.ones(3), np.ones((3, 2))), "2-D"),
        ((np.ones((0, 3)), np.ones((3, 2))), "non-empty"),
    ],
)
def test_bad_matmul_shapes_are_refused(args, message):
    with pytest.raises(InvalidArgument, match=message):
        matmul(*args)
    with pytest.raises(InvalidArgument, match=message):
        matmul_kernel(*args, a100)


def test_bad_mlp_shapes_are_refused():
    x = np.ones((2, 3))
    with pytest.raises(InvalidArgument, match="do not take inputs of 3"):
        mlp_forward(x, [np.ones((4, 2))], [np.ones(2)])
    with pytest.raises(InvalidArgument, match="bias shape"):
        mlp_forward(x, [np.ones((3, 2))], [np.ones(3)])
    with pytest.raises(InvalidArgument, match="at least one layer"):
        mlp_kernel(x, [], [], a100)

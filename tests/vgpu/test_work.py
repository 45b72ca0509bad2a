"""The work model: kernel and atom validation, TPC masks, atomization, block costs."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.vgpu.errors import InvalidArgument
from drivers.vgpu.presets import a100, h100
from drivers.vgpu.work import (
    UNITS_PER_TPC,
    Atom,
    BlockCost,
    KernelDesc,
    atomize,
    check_mask,
    mask_of,
    tpcs_of,
)

kernels = st.builds(
    KernelDesc,
    name=st.just("k"),
    grid_blocks=st.integers(1, 5000),
    blocks_per_tpc=st.integers(1, 16),
    block_duration_ns=st.integers(1, 200_000),
    mem_fraction=st.floats(0.0, 1.0),
)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"grid_blocks": 0}, "grid_blocks must be a positive integer"),
        ({"grid_blocks": -3}, "grid_blocks must be a positive integer"),
        ({"blocks_per_tpc": 0}, "blocks_per_tpc must be a positive integer"),
        ({"blocks_per_tpc": 17}, "at most 16"),
        ({"block_duration_ns": 0}, "block_duration_ns must be a positive integer"),
        ({"block_duration_ns": 10**11}, "at most"),
        ({"block_duration_ns": 1.5}, "block_duration_ns must be a positive integer"),
        ({"mem_fraction": -0.1}, r"mem_fraction must be within \[0, 1\]"),
        ({"mem_fraction": 1.5}, r"mem_fraction must be within \[0, 1\]"),
        ({"priority": 1.0}, "priority must be an integer"),
    ],
)
def test_kernel_desc_refuses_bad_fields(change, message):
    fields = {"name": "k", "grid_blocks": 10, "blocks_per_tpc": 2, "block_duration_ns": 100}
    with pytest.raises(InvalidArgument, match=message):
        KernelDesc(**(fields | change))


def test_every_block_size_is_an_exact_share_of_a_tpc():
    for b in range(1, 17):
        assert UNITS_PER_TPC % b == 0
        assert KernelDesc("k", 1, b, 1).block_units * b == UNITS_PER_TPC


@pytest.mark.parametrize(
    ("begin", "end", "mask", "message"),
    [(5, 5, 1, "non-empty"), (0, 11, 1, "within"), (-1, 3, 1, "within"), (0, 3, 0, "names no TPC")],
)
def test_atom_refuses_empty_or_out_of_grid_ranges_and_empty_masks(begin, end, mask, message):
    with pytest.raises(InvalidArgument, match=message):
        Atom(KernelDesc("k", 10, 1, 100), begin, end, mask)


@given(st.sets(st.integers(0, 200)))
def test_mask_of_and_tpcs_of_are_inverse(tpcs):
    assert tpcs_of(mask_of(tpcs)) == sorted(tpcs)


@pytest.mark.parametrize(
    ("mask", "message"), [(0, "names no TPC"), (-4, "names no TPC"), (1 << 54, "names TPC 54")]
)
def test_check_mask_refuses_empty_masks_and_tpcs_beyond_the_device(mask, message):
    with pytest.raises(InvalidArgument, match=message):
        check_mask(mask, 54)


@given(kernels, st.integers(1, 2_000_000), st.integers(1, 66), st.data())
def test_atomize_runs_every_block_exactly_once(kernel, target_ns, n_tpcs, data):
    mask = data.draw(st.integers(1, (1 << n_tpcs) - 1))
    atoms = atomize(kernel, target_ns, n_tpcs, mask)
    blocks = [b for atom in atoms for b in range(atom.begin, atom.end)]
    assert blocks == list(range(kernel.grid_blocks))
    assert all(atom.mask == mask and atom.kernel is kernel for atom in atoms)


@given(kernels, st.integers(250_000, 500_000))
def test_atoms_last_about_the_target_duration(kernel, target_ns):
    atoms = atomize(kernel, target_ns, a100.n_tpcs)
    waves = max(1, round(target_ns / kernel.block_duration_ns))
    for atom in atoms[:-1]:  # the last atom holds what remains
        assert kernel.waves(a100.n_tpcs, atom.n_blocks) == waves
        if kernel.block_duration_ns <= target_ns:
            assert atom_duration(kernel, atom) <= target_ns + kernel.block_duration_ns / 2


def atom_duration(kernel: KernelDesc, atom: Atom) -> int:
    return kernel.waves(a100.n_tpcs, atom.n_blocks) * kernel.block_duration_ns


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 54), "target duration must be positive"),
        ((100, 0), "n_tpcs must be a positive"),
        ((1.5, 54), "integer of ns"),
        ((100, 4, 1 << 5), "names TPC 5"),
    ],
)
def test_atomize_refuses_bad_arguments(args, message):
    with pytest.raises(InvalidArgument, match=message):
        atomize(KernelDesc("k", 10, 1, 100), *args)


@given(kernels, st.sampled_from([a100, h100]))
def test_a_kernel_alone_on_the_whole_device_takes_its_block_duration(k, spec):
    cost = BlockCost.of(k, spec)
    assert cost.units * k.blocks_per_tpc == UNITS_PER_TPC
    assert cost.compute_ns + round(k.block_duration_ns * k.mem_fraction) == k.block_duration_ns
    demand = cost.demand_mbps * spec.n_tpcs * k.blocks_per_tpc  # every slot full
    bw = spec.bandwidth_mbps
    mem = cost.mem_ns if demand <= bw else math.ceil(cost.mem_ns * demand / bw)
    assert abs(cost.compute_ns + mem - k.block_duration_ns) <= 1e-3 * k.block_duration_ns + 8


def test_a_memory_bound_kernel_saturates_bandwidth_with_a_quarter_of_the_device():
    k = KernelDesc("stream", 1, 2, 1000, mem_fraction=1.0)
    cost = BlockCost.of(k, a100)
    quarter_of_slots = a100.n_tpcs * 2 // 4
    assert cost.demand_mbps * quarter_of_slots == pytest.approx(a100.bandwidth_mbps, rel=0.02)
    assert cost.mem_ns == 250  # unhindered, it streams 4x faster than when it fills the GPU

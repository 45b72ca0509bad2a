"""The vGPU work model: kernels, atoms, TPC masks and atomization (`drivers/vgpu`).

A *kernel* is a grid of thread blocks.  Each block holds a fixed share of one
TPC while it runs (`blocks_per_tpc` of them fit in a TPC at once) and lasts
`block_duration_ns` at the maximum clock with the memory system uncontended.

An *atom* is a contiguous range ``[begin, end)`` of one kernel's blocks with a
TPC mask: the TPCs its blocks may run on (LithOS §4.2, "atoms").  The engine
dispatches atoms, and policies decide which atoms to launch, with which mask
and priority.  `atomize` cuts a kernel into atoms of about a target duration
(LithOS uses 250-500 us).

Masks are Python ints at the API: bit ``t`` set means TPC ``t`` may be used.

Occupancy is exact integer arithmetic: a TPC has `UNITS_PER_TPC` = 720720 =
lcm(1..16) capacity units, and a block of a kernel with ``blocks_per_tpc = b``
(1 <= b <= 16) holds ``720720 // b`` of them, with no remainder.  Blocks of
different kernels therefore share a TPC exactly in proportion.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import attrs

from drivers.vgpu.errors import InvalidArgument

if TYPE_CHECKING:
    from drivers.vgpu.presets import GpuSpec

#: Capacity units of one TPC: lcm(1..16), so every 1/b share is an integer.
UNITS_PER_TPC = 720720
MAX_BLOCKS_PER_TPC = 16
#: Longest block: keeps every product in the timing model inside int64.
MAX_BLOCK_DURATION_NS = 10**10


def _positive_int(instance, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        cls = type(instance).__name__
        raise InvalidArgument(f"{cls}.{attribute.name} must be a positive integer, got {value!r}")


def _check_blocks_per_tpc(instance, attribute, value) -> None:
    _positive_int(instance, attribute, value)
    if value > MAX_BLOCKS_PER_TPC:
        raise InvalidArgument(
            f"KernelDesc.blocks_per_tpc must be at most {MAX_BLOCKS_PER_TPC}, got {value}"
        )


def _check_block_duration(instance, attribute, value) -> None:
    _positive_int(instance, attribute, value)
    if value > MAX_BLOCK_DURATION_NS:
        raise InvalidArgument(
            f"KernelDesc.block_duration_ns must be at most {MAX_BLOCK_DURATION_NS} ns, got {value}"
        )


def _check_fraction(instance, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise InvalidArgument(f"KernelDesc.mem_fraction must be within [0, 1], got {value!r}")


def _check_int(instance, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        cls = type(instance).__name__
        raise InvalidArgument(f"{cls}.{attribute.name} must be an integer, got {value!r}")


@attrs.frozen
class KernelDesc:
    """A kernel: what the timing model needs to know about a grid launch.

    `priority`: larger runs first; it is the default priority of the
    kernel's atoms.  `fn`, when set, is called with no arguments when the
    kernel's last block completes, and its return value is the kernel's
    result (functional execution, see `functional.py`).
    """

    name: str
    grid_blocks: int = attrs.field(validator=_positive_int)
    blocks_per_tpc: int = attrs.field(validator=_check_blocks_per_tpc)
    block_duration_ns: int = attrs.field(validator=_check_block_duration)
    mem_fraction: float = attrs.field(default=0.0, validator=_check_fraction)
    priority: int = attrs.field(default=0, validator=_check_int)
    fn: Callable[[], Any] | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def block_units(self) -> int:
        return UNITS_PER_TPC // self.blocks_per_tpc

    def waves(self, n_tpcs: int, n_blocks: int | None = None) -> int:
        """Waves needed to run `n_blocks` (default: the grid) on `n_tpcs` TPCs."""
        blocks = self.grid_blocks if n_blocks is None else n_blocks
        return math.ceil(blocks / (n_tpcs * self.blocks_per_tpc))

    def isolated_duration_ns(self, n_tpcs: int) -> int:
        """Duration alone on `n_tpcs` TPCs at max clock, memory uncontended."""
        return self.waves(n_tpcs) * self.block_duration_ns


# -- TPC masks -------------------------------------------------------------


def mask_of(tpcs: Iterable[int]) -> int:
    """The mask with exactly these TPC indices set."""
    mask = 0
    for t in tpcs:
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise InvalidArgument(f"TPC index must be a non-negative integer, got {t!r}")
        mask |= 1 << t
    return mask


def tpcs_of(mask: int) -> list[int]:
    """The TPC indices set in `mask`, ascending."""
    return [t for t in range(mask.bit_length()) if mask >> t & 1]


def check_mask(mask: int, n_tpcs: int) -> int:
    """Return `mask` if it names at least one TPC and none beyond the device."""
    if isinstance(mask, bool) or not isinstance(mask, int):
        raise InvalidArgument(f"TPC mask must be an int bit set, got {mask!r}")
    if mask <= 0:
        raise InvalidArgument(f"TPC mask {mask:#x} names no TPC")
    if mask >> n_tpcs:
        raise InvalidArgument(
            f"TPC mask {mask:#x} names TPC {mask.bit_length() - 1}, "
            f"but the device has TPCs 0-{n_tpcs - 1}"
        )
    return mask


# -- atoms -----------------------------------------------------------------


def _check_atom(instance: Atom, attribute, value) -> None:
    grid = instance.kernel.grid_blocks
    if not 0 <= instance.begin < instance.end <= grid:
        raise InvalidArgument(
            f"atom range [{instance.begin}, {instance.end}) of kernel "
            f"{instance.kernel.name!r} must be non-empty and within [0, {grid})"
        )


@attrs.frozen
class Atom:
    """Blocks ``[begin, end)`` of `kernel`, to run on the TPCs in `mask`."""

    kernel: KernelDesc
    begin: int = attrs.field(validator=_check_int)
    end: int = attrs.field(validator=[_check_int, _check_atom])
    mask: int = attrs.field(validator=_check_int)
    priority: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.mask <= 0:
            raise InvalidArgument(f"atom TPC mask {self.mask:#x} names no TPC")

    @property
    def n_blocks(self) -> int:
        return self.end - self.begin


def atomize(
    kernel: KernelDesc, target_duration_ns: int, n_tpcs: int, mask: int | None = None
) -> list[Atom]:
    """Split `kernel` into atoms of about `target_duration_ns` each (LithOS §4.2).

    An atom of ``w`` waves on ``T`` TPCs holds ``w * T * blocks_per_tpc``
    blocks and lasts about ``w * block_duration_ns``.  ``w`` is the target
    divided by the block duration, rounded, and at least 1: a block is never
    split.  `n_tpcs` is the device's TPC count; the atoms run on `mask`
    (default: every TPC) and are sized for its TPC count.  The last atom takes
    what remains, so every block of the grid is in exactly one atom.
    """
    if isinstance(target_duration_ns, bool) or not isinstance(target_duration_ns, int):
        raise InvalidArgument(
            f"target duration must be an integer of ns, got {target_duration_ns!r}"
        )
    if target_duration_ns <= 0:
        raise InvalidArgument(f"target duration must be positive, got {target_duration_ns} ns")
    if isinstance(n_tpcs, bool) or not isinstance(n_tpcs, int) or n_tpcs <= 0:
        raise InvalidArgument(f"n_tpcs must be a positive integer, got {n_tpcs!r}")
    mask = (1 << n_tpcs) - 1 if mask is None else check_mask(mask, n_tpcs)
    waves = max(1, round(target_duration_ns / kernel.block_duration_ns))
    per_atom = waves * mask.bit_count() * kernel.blocks_per_tpc
    return [
        Atom(kernel, begin, min(begin + per_atom, kernel.grid_blocks), mask)
        for begin in range(0, kernel.grid_blocks, per_atom)
    ]


# -- the per-block cost both timing models start from ------------------------


@attrs.frozen
class BlockCost:
    """A kernel's blocks in the engine's integer units on one device.

    Memory model.  A block of a kernel with memory-bound fraction ``m``
    would, unhindered, stream from DRAM at ``m / s`` times its equal share of
    the bandwidth, with ``s`` the spec's `dram_saturation_share`: a purely
    memory-bound kernel saturates DRAM with a share ``s`` of the device's
    block slots (a quarter by default).  So a block draws::

        demand_mbps = round(m / s * bandwidth_mbps / (n_tpcs * blocks_per_tpc))

    and, when the running blocks draw more than the bandwidth, every memory
    part stretches by ``demand / bandwidth``.  The kernel's block duration is
    what it took *alone on the whole device*, already stretched by its own
    ``max(1, m / s)``; the unhindered memory part is therefore::

        mem_ns = round(block_duration_ns * m / max(1, m / s))

    and ``compute_ns = block_duration_ns - round(block_duration_ns * m)``.
    Alone on the whole device a block lasts its `block_duration_ns` (to the
    rounding); on fewer TPCs a memory-bound kernel's blocks run faster, as on
    real GPUs; two memory-bound kernels side by side slow each other down.
    """

    units: int
    compute_ns: int
    mem_ns: int
    demand_mbps: int

    @classmethod
    def of(cls, kernel: KernelDesc, spec: GpuSpec) -> BlockCost:
        m = kernel.mem_fraction
        oversubscription = m / spec.dram_saturation_share
        slots = spec.n_tpcs * kernel.blocks_per_tpc
        mem_isolated_ns = round(kernel.block_duration_ns * m)
        return cls(
            units=kernel.block_units,
            compute_ns=kernel.block_duration_ns - mem_isolated_ns,
            mem_ns=round(kernel.block_duration_ns * m / max(1.0, oversubscription)),
            demand_mbps=round(oversubscription * spec.bandwidth_mbps / slots),
        )

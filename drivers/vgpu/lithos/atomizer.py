"""LithOS's kernel atomizer (LithOS §4.2).

An *atom* is a contiguous range of a kernel's thread blocks that runs on a
TPC mask.  Cutting long kernels into atoms of 250-500 us bounds head-of-line
blocking (an owner waits at most one atom for a TPC) and lets the TPC
scheduler move a kernel between masks while it runs.  A block is never
split, so a kernel whose single wave lasts longer than the upper bound
runs in atoms of one wave.

`atom_blocks` cuts evenly: with ``c`` the waves that fit in `max_ns`, a
kernel of ``W`` waves becomes ``n = ceil(W / c)`` atoms of ``ceil(W / n)``
waves, never above `max_ns` and, once split, about half of it or more
(250-500 us for the defaults); a kernel shorter than `max_ns` stays whole.
"""

from __future__ import annotations

import math


class Atomizer:
    def __init__(self, min_ns: int = 250_000, max_ns: int = 500_000) -> None:
        if not 0 < min_ns <= max_ns:
            raise ValueError(f"atom bounds must satisfy 0 < min <= max, got {min_ns}, {max_ns}")
        self.min_ns = min_ns
        self.max_ns = max_ns
        self.atoms = 0
        self.split_kernels = 0

    def atom_blocks(self, remaining: int, n_tpcs: int, blocks_per_tpc: int, wave_ns: float) -> int:
        """Blocks of the next atom of a kernel with `remaining` blocks left on `n_tpcs` TPCs."""
        wave_blocks = n_tpcs * blocks_per_tpc
        waves = math.ceil(remaining / wave_blocks)
        total_ns = waves * max(1.0, wave_ns)
        self.atoms += 1
        if total_ns <= self.max_ns:
            return remaining
        cap = max(1, int(self.max_ns // max(1.0, wave_ns)))  # waves that fit the bound
        n_atoms = math.ceil(waves / cap)
        per_atom = math.ceil(waves / n_atoms)
        return min(remaining, per_atom * wave_blocks)

"""LithOS's transparent power management: DVFS from the work in flight (LithOS §6).

A kernel's *frequency sensitivity* ``s`` says how much of its time scales
with the clock: run at ``f`` instead of ``f_max`` it takes
``l(f) = l(f_max) * (1 + s * (f_max / f - 1))``, so ``s = 1`` for a purely
compute-bound kernel and ``s = 0`` for one bound by memory.  It is measured
online from the kernel's own runs at two clocks::

    s = slowdown / (f_max / f - 1),   slowdown = l(f) / l(f_max) - 1

The governor weights the sensitivities of the recent kernels by their
runtime into ``S`` and picks the lowest clock whose predicted slowdown of
that mix stays within the slip::

    f = f_max / (1 + slip / S)

where `slip` is the allowed slowdown (0.1 for LithOS's slip of 1.1),
rounded down to a clock step.  Kernels seen only at f_max count as fully
sensitive (s = 1) until they have run at another clock, which is how
their sensitivity gets measured; when kernels never seen at f_max make up
more than `unseen_share` of the recent runtime, the governor returns to
f_max so that they are.  A clock change takes tens of milliseconds, so
decisions are taken every `period_ns` and changes are at least
`min_interval_ns` apart.
"""

from __future__ import annotations

from collections.abc import Hashable

from drivers.vgpu.presets import GpuSpec


class _Sensitivity:
    __slots__ = ("l_max", "s")

    def __init__(self) -> None:
        self.l_max: float | None = None
        self.s: float | None = None


class DvfsGovernor:
    def __init__(
        self,
        spec: GpuSpec,
        slip: float = 1.1,
        period_ns: int = 50_000_000,
        min_interval_ns: int = 200_000_000,
        unseen_share: float = 0.1,
        weight: float = 0.5,
    ) -> None:
        if slip < 1.0:
            raise ValueError(f"DVFS slip must be at least 1, got {slip}")
        self.spec = spec
        self.allowed_slowdown = slip - 1.0
        self.period_ns = period_ns
        self.min_interval_ns = min_interval_ns
        self.unseen_share = unseen_share
        self.weight = weight
        self._kernels: dict[Hashable, _Sensitivity] = {}
        self._window: dict[Hashable, int] = {}
        self.last_change_ns = -(1 << 62)
        self.changes = 0
        self.last_sensitivity: float | None = None

    def observe(self, key: Hashable, latency_ns: int, clock_mhz: int) -> None:
        """Kernel `key` ran start to end at `clock_mhz` in `latency_ns`."""
        k = self._kernels.get(key)
        if k is None:
            k = self._kernels[key] = _Sensitivity()
        f_max = self.spec.max_clock_mhz
        if clock_mhz == f_max:
            k.l_max = (
                latency_ns if k.l_max is None else k.l_max + self.weight * (latency_ns - k.l_max)
            )
        elif k.l_max is not None:
            slowdown = latency_ns / k.l_max - 1.0
            s = min(1.0, max(0.0, slowdown / (f_max / clock_mhz - 1.0)))
            k.s = s if k.s is None else k.s + self.weight * (s - k.s)
        self._window[key] = self._window.get(key, 0) + latency_ns

    def sensitivity(self, key: Hashable) -> float | None:
        k = self._kernels.get(key)
        return None if k is None else k.s

    def target_mhz(self) -> int | None:
        """The clock for the mix seen since the last decision (None: nothing ran)."""
        total = unseen = weighted = 0.0
        for key, runtime in self._window.items():
            k = self._kernels[key]
            total += runtime
            if k.l_max is None:
                unseen += runtime
            else:
                weighted += runtime * (1.0 if k.s is None else k.s)
        self._window.clear()
        if total <= 0:
            return None
        spec = self.spec
        if unseen > self.unseen_share * total:
            return spec.max_clock_mhz
        S = weighted / (total - unseen)
        self.last_sensitivity = S
        if S <= 0:
            return spec.min_clock_mhz
        f = spec.max_clock_mhz / (1.0 + self.allowed_slowdown / S)
        steps = int((f - spec.min_clock_mhz) // spec.clock_step_mhz)
        return max(
            spec.min_clock_mhz,
            min(spec.max_clock_mhz, spec.min_clock_mhz + steps * spec.clock_step_mhz),
        )

    def decide(self, now_ns: int, clock_mhz: int) -> int | None:
        """A clock to switch to now, or None (no change, or too soon after the last)."""
        target = self.target_mhz()
        if target is None or target == clock_mhz:
            return None
        if now_ns - self.last_change_ns < self.min_interval_ns:
            return None
        self.last_change_ns = now_ns
        self.changes += 1
        return target

"""DNN workloads for the vGPU: real per-kernel profiles and a synthetic generator (`drivers/vgpu`).

*Real profiles.*  `load_orion_csv` reads Orion's per-kernel profile format
(``Name,Profile,Memory_footprint,SM_usage,Duration``, one row per kernel
launch of a model's inference or training iteration) from any path.  The
project ships no such file: tests read them from ``../shared/workloads``.

*Synthetic default.*  `synthetic_workload` draws a model's kernels from a
`ModelSummary`: kernel count, total duration, spread of durations, and the
shares of compute- and memory-bound kernels.  The `MODELS` presets are the
summaries of Orion's own profiles, so experiments run without the files.

Conversion of a profile row to a `KernelDesc` (`kernel_from_profile`)
------------------------------------------------------------------------
Work is counted in *SM-waves*.  ``SM_usage`` is the number of SMs the kernel
would fill alone, ceil(grid blocks / blocks resident per SM), so one
*model block* here stands for the thread blocks one SM holds at once, and a
TPC (two SMs) holds two of them: ``blocks_per_tpc = 2``.  On the profiled
device, with ``S`` SMs, the kernel ran in ``ceil(SM_usage / S)`` waves, so::

    grid_blocks       = SM_usage
    block_duration_ns = round(Duration / ceil(SM_usage / S))     (at least 1)

``S = 80``: the Orion profiles were measured on V100-class GPUs (80 SMs).
We assume such an SM does the same work per ns as one SM of the simulated
device at its maximum clock.  ``Profile`` gives the memory-bound fraction:
compute-bound (1) 0.2, memory-bound (0) 0.8, unknown (-1) 0.5.
``Memory_footprint`` is kept as the kernel's memory need, in bytes.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import attrs
import numpy as np

from drivers.vgpu.errors import InvalidArgument, TraceFormatError
from drivers.vgpu.work import KernelDesc

#: SMs of the device the Orion profiles were measured on (V100 class).
PROFILED_SMS = 80
#: One model block is one SM's worth of resident thread blocks: two per TPC.
BLOCKS_PER_TPC = 2
#: Memory-bound fraction by Orion's Profile column.
MEM_FRACTION_BY_PROFILE = {1: 0.2, 0: 0.8, -1: 0.5}
COLUMNS = ("Name", "Profile", "Memory_footprint", "SM_usage", "Duration")


@attrs.frozen
class Workload:
    """A model's kernels in launch order, as the vGPU runs them."""

    name: str
    kernels: tuple[KernelDesc, ...]
    #: Sum of the profiled (or generated) kernel durations, in ns.
    profiled_duration_ns: int
    #: Per kernel, its memory footprint in bytes (0 where unknown).
    memory_footprint_bytes: tuple[int, ...]
    source: str

    def isolated_duration_ns(self, n_tpcs: int) -> int:
        """Kernels back to back, each alone on `n_tpcs` TPCs at max clock."""
        return sum(k.isolated_duration_ns(n_tpcs) for k in self.kernels)

    @property
    def memory_bound_share(self) -> float:
        return sum(k.mem_fraction > 0.5 for k in self.kernels) / len(self.kernels)


def kernel_from_profile(
    name: str, profile: int, sm_usage: int, duration_ns: float, profiled_sms: int = PROFILED_SMS
) -> KernelDesc:
    """The conversion stated in the module docstring."""
    waves = math.ceil(sm_usage / profiled_sms)
    return KernelDesc(
        name=name,
        grid_blocks=sm_usage,
        blocks_per_tpc=BLOCKS_PER_TPC,
        block_duration_ns=max(1, round(duration_ns / waves)),
        mem_fraction=MEM_FRACTION_BY_PROFILE[profile],
    )


# -- real profiles -----------------------------------------------------------


def _number(path: Path, line: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceFormatError(f"{path}: line {line}: {column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise TraceFormatError(f"{path}: line {line}: {column} {text!r} is not finite")
    return value


def _integer(path: Path, line: int, column: str, text: str) -> int:
    value = _number(path, line, column, text)
    if value != int(value):
        raise TraceFormatError(f"{path}: line {line}: {column} {text!r} is not an integer")
    return int(value)


def load_orion_csv(path: str | Path, profiled_sms: int = PROFILED_SMS) -> Workload:
    """Read an Orion per-kernel profile; TraceFormatError names the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise TraceFormatError(f"{path}: cannot read: {err.strerror or err}") from None
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    if header is None:
        raise TraceFormatError(f"{path}: empty file, expected the header {','.join(COLUMNS)}")
    if tuple(h.strip() for h in header) != COLUMNS:
        raise TraceFormatError(
            f"{path}: line 1: columns are {','.join(header)!r}, expected {','.join(COLUMNS)}"
        )
    kernels: list[KernelDesc] = []
    footprints: list[int] = []
    total_ns = 0.0
    for line, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != len(COLUMNS):
            raise TraceFormatError(
                f"{path}: line {line}: {len(row)} fields, expected {len(COLUMNS)}"
            )
        name, profile_text, footprint_text, sm_text, duration_text = row
        profile = _integer(path, line, "Profile", profile_text)
        if profile not in MEM_FRACTION_BY_PROFILE:
            raise TraceFormatError(f"{path}: line {line}: Profile {profile} is not 1, 0 or -1")
        footprint = _integer(path, line, "Memory_footprint", footprint_text)
        sm_usage = _integer(path, line, "SM_usage", sm_text)
        duration_ns = _number(path, line, "Duration", duration_text)
        if footprint < 0:
            raise TraceFormatError(f"{path}: line {line}: Memory_footprint {footprint} < 0")
        if sm_usage < 1:
            raise TraceFormatError(f"{path}: line {line}: SM_usage {sm_usage} < 1")
        if duration_ns <= 0:
            raise TraceFormatError(f"{path}: line {line}: Duration {duration_text} is not positive")
        try:
            kernels.append(kernel_from_profile(name, profile, sm_usage, duration_ns, profiled_sms))
        except InvalidArgument as err:
            raise TraceFormatError(f"{path}: line {line}: {err}") from None
        footprints.append(footprint)
        total_ns += duration_ns
    if not kernels:
        raise TraceFormatError(f"{path}: no kernel rows after the header")
    return Workload(path.stem, tuple(kernels), round(total_ns), tuple(footprints), str(path))


#: A whole model's request (an inference, or a training iteration) on a GPU of
#: this class takes from about 0.1 ms (a small model, batch 1) to seconds; a
#: profile far outside that holds placeholder durations (Orion's `*_fb0`
#: kernel lists sum to a few microseconds), not a measurement.
PLAUSIBLE_REQUEST_NS = (100_000, 60_000_000_000)
#: No real kernel runs in less than a microsecond on average.
PLAUSIBLE_MEAN_KERNEL_NS = 1_000


def implausible_duration(workload: Workload) -> str | None:
    """Why `workload`'s profiled durations look like placeholders, naming its
    source file; None when they are plausible for a model."""
    total = workload.profiled_duration_ns
    low, high = PLAUSIBLE_REQUEST_NS
    mean = total / len(workload.kernels)
    if low <= total <= high and mean >= PLAUSIBLE_MEAN_KERNEL_NS:
        return None
    return (
        f"{workload.source}: its {len(workload.kernels)} kernels sum to {total / 1e6:.4g} ms "
        f"({mean / 1e3:.3g} us each), implausible for a whole model; placeholder durations?"
    )


# -- the synthetic generator ---------------------------------------------------


def _share(instance, attribute, value) -> None:
    if not 0.0 <= value <= 1.0:
        raise InvalidArgument(f"ModelSummary.{attribute.name} must be within [0, 1], got {value}")


def _positive(instance, attribute, value) -> None:
    if not value > 0:
        raise InvalidArgument(f"ModelSummary.{attribute.name} must be positive, got {value}")


@attrs.frozen
class ModelSummary:
    """Published summary figures of one model's kernel trace."""

    name: str
    n_kernels: int = attrs.field(validator=_positive)
    #: Sum of kernel durations, run alone on the profiled device, in ns.
    total_duration_ns: int = attrs.field(validator=_positive)
    #: Standard deviation of log(kernel duration): the spread of durations.
    duration_sigma: float = attrs.field(validator=attrs.validators.ge(0.0))
    memory_bound_share: float = attrs.field(validator=_share)
    compute_bound_share: float = attrs.field(validator=_share)
    #: Median and largest SM usage; SM usage is log-normal (sigma 1.5), clipped.
    sm_usage_median: int = attrs.field(validator=_positive)
    sm_usage_max: int = attrs.field(validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.memory_bound_share + self.compute_bound_share > 1.0:
            raise InvalidArgument(f"{self.name}: memory- and compute-bound shares exceed 1")
        if self.total_duration_ns < self.n_kernels:
            raise InvalidArgument(f"{self.name}: total duration below 1 ns per kernel")
        if self.sm_usage_median > self.sm_usage_max:
            raise InvalidArgument(f"{self.name}: median SM usage above the maximum")


def synthetic_workload(summary: ModelSummary, seed: int = 0) -> Workload:
    """Kernels drawn to match `summary`; the same seed gives the same workload.

    Durations are log-normal with the summary's spread, scaled so that they
    add up to its total exactly; profiles follow its shares; SM usage is
    log-normal around its median.  Each drawn row then goes through
    `kernel_from_profile`, as a real profile row would.
    """
    rng = np.random.default_rng(seed)
    n = summary.n_kernels
    weights = rng.lognormal(0.0, summary.duration_sigma, n)
    durations = np.maximum(1, np.floor(weights / weights.sum() * summary.total_duration_ns))
    durations = durations.astype(np.int64)
    shortfall = summary.total_duration_ns - int(durations.sum())
    durations[np.argsort(-weights, kind="stable")[: max(0, shortfall)]] += 1
    mem, comp = summary.memory_bound_share, summary.compute_bound_share
    profiles = rng.choice([0, 1, -1], size=n, p=[mem, comp, max(0.0, 1.0 - mem - comp)])
    sm = np.exp(rng.normal(math.log(summary.sm_usage_median), 1.5, n))
    sm_usage = np.clip(np.rint(sm), 1, summary.sm_usage_max).astype(np.int64)
    kernels = tuple(
        kernel_from_profile(f"{summary.name}.k{i}", int(p), int(s), int(d))
        for i, (p, s, d) in enumerate(zip(profiles, sm_usage, durations, strict=True))
    )
    return Workload(
        summary.name, kernels, int(durations.sum()), (0,) * n, f"synthetic:{summary.name}:{seed}"
    )


# Summaries of Orion's profiles (V100), which are the published figures we have.
MODELS: dict[str, ModelSummary] = {
    m.name: m
    for m in (
        ModelSummary("resnet50_b4_inference", 175, 6_500_000, 1.2, 0.46, 0.31, 64, 392),
        ModelSummary("resnet50_b32_training", 946, 95_000_000, 1.9, 0.60, 0.17, 18, 12544),
        ModelSummary("bert_b2_inference", 572, 48_600_000, 1.3, 0.35, 0.34, 192, 1152),
        ModelSummary("mobilenetv2_b4_inference", 152, 2_260_000, 0.8, 0.54, 0.22, 37, 882),
    )
}


def model_workload(name: str, seed: int = 0) -> Workload:
    """The synthetic workload of a preset model summary."""
    summary = MODELS.get(name)
    if summary is None:
        raise InvalidArgument(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return synthetic_workload(summary, seed)


def is_profile_path(spec: str) -> bool:
    """Whether a model named on a command line is a profile's path (a name
    ending in ``.csv``, or any existing file) rather than a `MODELS` preset."""
    return spec.endswith(".csv") or Path(spec).is_file()


def load_workload(spec: str, seed: int = 0) -> Workload:
    """A model named on a command line: an Orion-format profile's path, or a preset."""
    return load_orion_csv(spec) if is_profile_path(spec) else model_workload(spec, seed)

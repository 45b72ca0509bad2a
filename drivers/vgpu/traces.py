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

``S`` is the SM count of the device the profile was measured on: 80 for
Orion's files, measured on a V100 (`ORION_DEVICE`); a scenario may name
another (`measured_on`).  ``Profile`` gives the memory-bound fraction:
compute-bound (1) 0.2, memory-bound (0) 0.8, unknown (-1) 0.5.
``Memory_footprint`` is kept as the kernel's memory need, in bytes.

Every `Workload` says on which device its durations hold (`measured_on`,
a preset name; None for the synthetic generator's default, whose kernels
are drawn for whatever device runs them).  `carry_to` carries a workload
to the device simulated, by the model stated in its docstring: the one
place where durations cross devices.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import attrs
import numpy as np

from drivers.vgpu.errors import InvalidArgument, TraceFormatError
from drivers.vgpu.presets import GpuSpec, get_preset
from drivers.vgpu.work import KernelDesc

#: The device Orion's kernel profiles were measured on (its artifact's V100).
ORION_DEVICE = "v100"
#: SMs of that device.
PROFILED_SMS = get_preset(ORION_DEVICE).n_sms
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
    #: The preset the durations were measured on; None: drawn for the
    #: device that runs them (the synthetic generator's default).
    measured_on: str | None = None
    #: The preset `carry_to` carried the durations to; None: not carried.
    carried_to: str | None = None

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


def load_orion_csv(path: str | Path, measured_on: str = ORION_DEVICE) -> Workload:
    """Read an Orion per-kernel profile measured on the preset `measured_on`;
    TraceFormatError names the file and line."""
    path = Path(path)
    profiled_sms = get_preset(measured_on).n_sms
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
    return Workload(
        path.stem, tuple(kernels), round(total_ns), tuple(footprints), str(path), measured_on
    )


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


# -- across devices ----------------------------------------------------------------


#: What `carry_to` was checked against, for results to say (its docstring has the details).
CARRY_VALIDATION = (
    "checked against Orion's own H100 profiles of two of the same models: carried from the "
    "V100, a request alone takes 14% (ResNet-50 b4) and 41% (MobileNetV2 b4) less than "
    "measured on the H100, because kernels of a few microseconds have a fixed cost the model "
    "scales away; no A100 profile is at hand, so V100 to A100 is not validated directly"
)


def device_factors(measured_on: GpuSpec, simulated_on: GpuSpec) -> tuple[float, float]:
    """(compute, memory): what one block's compute-bound and memory-bound
    time are multiplied by, carried from `measured_on` to `simulated_on`
    (the model of `carry_to`)."""
    compute = _per_sm(measured_on.peak_fp32_tflops, measured_on) / _per_sm(
        simulated_on.peak_fp32_tflops, simulated_on
    )
    memory = _per_sm(measured_on.bandwidth_gbps, measured_on) / _per_sm(
        simulated_on.bandwidth_gbps, simulated_on
    )
    return compute, memory


def _per_sm(rate: float, spec: GpuSpec) -> float:
    return rate / spec.n_sms


def carry_to(workload: Workload, simulated_on: GpuSpec) -> Workload:
    """`workload`, measured on the preset `workload.measured_on`, as it runs
    on `simulated_on`: the one place where durations cross devices.

    The model.  A model block is one SM's worth of resident thread blocks
    for one wave (module docstring), so what carries across is an SM's
    time for it; the SM count itself enters through the waves, which the
    engine recounts from the grid on the simulated device's TPCs.  A block
    of memory-bound fraction ``m`` and duration ``b`` splits into::

        compute part  (1 - m) * b  x  c,  c = rate_M / rate_D
        memory part        m  * b  x  r,  r = (BW_M / SMs_M) / (BW_D / SMs_D)

    with ``rate`` one SM's peak FP32 rate (peak TFLOP/s over the SM count:
    lanes times the maximum clock) and ``BW / SMs`` one SM's share of the
    DRAM bandwidth: a kernel that fills the device moves the same bytes per
    block, and a wave of it is bound by the whole device's bandwidth.  The
    carried block lasts ``b' = b((1 - m)c + m r)``, and its memory-bound
    fraction becomes ``m r b / b'``.  V100 to A100: c = 1.087 (1530 vs
    1410 MHz with 64 FP32 lanes per SM on both, to the rounding of the
    published peaks), r = 0.781 (11.25 vs 14.4 GB/s per SM).

    Validation (`CARRY_VALIDATION`): Orion's repository also holds H100
    profiles of two of the same models (eth-easl/orion,
    benchmarking/model_kernels/h100/, read once; not shipped).  Carried
    from the V100 to the H100, a request alone on the whole GPU takes
    2.26 ms for ResNet-50 b4 against 2.61 ms measured (-14%), and 0.84 ms
    for MobileNetV2 b4 against 1.43 ms (-41%); not carried, 5.59 ms (+114%)
    and 2.04 ms (+42%).  The error is in the short kernels: no H100 kernel
    lasts under 4.3 us, while the model scales the V100's 3.5-4 us kernels
    to 1.4 us; a per-kernel fixed cost (launch, ramp-up, tail) is not in
    the model.  No A100 profile is at hand, so V100 to A100 (factors nearer
    1) is not validated directly.

    Not modelled either: tensor cores (an A100 SM does twice a V100 SM's
    dense FP16 tensor work per clock, so tensor-core kernels run faster
    there than `c` says) and caches (the A100's L2 is 40 MB, the V100's
    6 MB).  A workload without `measured_on`, or measured on
    `simulated_on`, or already carried, is returned as it is.
    """
    source = workload.measured_on
    if source is None or source == simulated_on.name or workload.carried_to is not None:
        return workload
    compute, memory = device_factors(get_preset(source), simulated_on)
    kernels = []
    for k in workload.kernels:
        m, b = k.mem_fraction, k.block_duration_ns
        carried = b * ((1.0 - m) * compute + m * memory)
        kernels.append(
            attrs.evolve(
                k,
                block_duration_ns=max(1, round(carried)),
                mem_fraction=min(1.0, m * memory * b / carried),
            )
        )
    return attrs.evolve(workload, kernels=tuple(kernels), carried_to=simulated_on.name)


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


def synthetic_workload(
    summary: ModelSummary, seed: int = 0, measured_on: str | None = None
) -> Workload:
    """Kernels drawn to match `summary`; the same seed gives the same workload.

    The summaries are figures of Orion's V100 profiles, but by default the
    kernels are drawn for the device that runs them (`measured_on` None:
    `carry_to` leaves them as they are); `measured_on` names a preset to
    carry them from, as a profile's.

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
        summary.name,
        kernels,
        int(durations.sum()),
        (0,) * n,
        f"synthetic:{summary.name}:{seed}",
        measured_on,
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


def load_workload(spec: str, seed: int = 0, simulated_on: GpuSpec | None = None) -> Workload:
    """A model named on a command line: an Orion-format profile's path (a
    V100's measurement), or a preset; carried to `simulated_on` when given."""
    workload = load_orion_csv(spec) if is_profile_path(spec) else model_workload(spec, seed)
    return workload if simulated_on is None else carry_to(workload, simulated_on)

"""Workloads: Orion profile loading and conversion, malformed files, the synthetic generator."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from drivers.vgpu.errors import InvalidArgument, TraceFormatError
from drivers.vgpu.traces import (
    MEM_FRACTION_BY_PROFILE,
    MODELS,
    PROFILED_SMS,
    ModelSummary,
    kernel_from_profile,
    load_orion_csv,
    model_workload,
    synthetic_workload,
)

WORKLOADS = Path(__file__).resolve().parents[2].parent / "shared" / "workloads"
ORION = WORKLOADS / "orion"
HEADER = "Name,Profile,Memory_footprint,SM_usage,Duration\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "model_1_fwd.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_row_becomes_a_kernel_in_sm_waves():
    kernel = kernel_from_profile("conv", 1, sm_usage=200, duration_ns=90_000)
    assert kernel.grid_blocks == 200 and kernel.blocks_per_tpc == 2
    assert kernel.block_duration_ns == 30_000  # three waves of 80 SMs
    assert kernel.isolated_duration_ns(PROFILED_SMS // 2) == 90_000
    assert kernel.mem_fraction == MEM_FRACTION_BY_PROFILE[1]


def test_names_with_quoted_commas_are_read_as_one_field(tmp_path):
    path = write(tmp_path, HEADER + '"void gemm<float, 128, 64>",1,1024,81,7000\nrelu,0,0,1,3000\n')
    workload = load_orion_csv(path)
    assert [k.name for k in workload.kernels] == ["void gemm<float, 128, 64>", "relu"]
    assert workload.profiled_duration_ns == 10_000
    assert workload.memory_footprint_bytes == (1024, 0)
    assert workload.kernels[0].block_duration_ns == 3500  # 81 SMs: two waves


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("Name,Profile,SM_usage,Duration\nk,1,1,5\n", "line 1: columns are"),
        (HEADER, "no kernel rows"),
        (HEADER + "k,1,0,4,-5\n", "line 2: Duration -5 is not positive"),
        (HEADER + "k,1,0,4,0\n", "line 2: Duration 0 is not positive"),
        (HEADER + "k,1,0,4,100\nk,1,0,four,100\n", "line 3: SM_usage 'four' is not a number"),
        (HEADER + "k,1,0,4,nan\n", "line 2: Duration 'nan' is not finite"),
        (HEADER + "k,2,0,4,100\n", "line 2: Profile 2 is not 1, 0 or -1"),
        (HEADER + "k,1,0,0,100\n", "line 2: SM_usage 0 < 1"),
        (HEADER + "k,1,0,2.5,100\n", "line 2: SM_usage '2.5' is not an integer"),
        (HEADER + "k,1,-8,2,100\n", "line 2: Memory_footprint -8 < 0"),
        (HEADER + "k,1,0,4\n", "line 2: 4 fields, expected 5"),
        (HEADER + "k,1,0,4,1e12\n", "line 2: .*block_duration_ns must be at most"),
    ],
)
def test_malformed_files_are_refused_naming_file_and_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(TraceFormatError, match=message) as caught:
        load_orion_csv(path)
    assert str(path) in str(caught.value)


def test_a_missing_file_is_a_trace_error(tmp_path):
    with pytest.raises(TraceFormatError, match="cannot read"):
        load_orion_csv(tmp_path / "absent.csv")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_synthetic_models_match_their_summaries(name):
    summary = MODELS[name]
    workload = model_workload(name, seed=3)
    assert len(workload.kernels) == summary.n_kernels
    assert workload.profiled_duration_ns == summary.total_duration_ns
    assert workload.isolated_duration_ns(PROFILED_SMS // 2) == pytest.approx(
        summary.total_duration_ns, rel=1e-3
    )
    assert max(k.grid_blocks for k in workload.kernels) <= summary.sm_usage_max
    share = workload.memory_bound_share
    assert abs(share - summary.memory_bound_share) < 4 / math.sqrt(summary.n_kernels)


def test_the_synthetic_generator_is_seeded_and_deterministic():
    summary = MODELS["resnet50_b4_inference"]
    assert synthetic_workload(summary, 7) == synthetic_workload(summary, 7)
    assert synthetic_workload(summary, 7) != synthetic_workload(summary, 8)


def test_resnet50_inference_summary_is_the_designs_figure():
    summary = MODELS["resnet50_b4_inference"]
    assert (summary.n_kernels, summary.total_duration_ns) == (175, 6_500_000)
    assert MODELS["resnet50_b32_training"].n_kernels == 946


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_kernels": 0}, "n_kernels must be positive"),
        ({"memory_bound_share": 0.9}, "shares exceed 1"),
        ({"compute_bound_share": -0.1}, r"within \[0, 1\]"),
        ({"total_duration_ns": 10}, "below 1 ns per kernel"),
        ({"sm_usage_median": 5000}, "median SM usage above the maximum"),
    ],
)
def test_bad_model_summaries_are_refused(change, message):
    fields = {
        "name": "m",
        "n_kernels": 100,
        "total_duration_ns": 10**6,
        "duration_sigma": 1.0,
        "memory_bound_share": 0.5,
        "compute_bound_share": 0.3,
        "sm_usage_median": 10,
        "sm_usage_max": 400,
    }
    with pytest.raises(InvalidArgument, match=message):
        ModelSummary(**(fields | change))


def test_unknown_models_are_refused_with_the_known_names():
    with pytest.raises(InvalidArgument, match="unknown model 'gpt5'.*resnet50_b4_inference"):
        model_workload("gpt5")


# -- the real profiles, read from ../shared/workloads ---------------------------

needs_orion = pytest.mark.skipif(
    not (ORION / "resnet50_4_fwd.csv").is_file(),
    reason=f"the Orion profiles are not at {ORION} (they live outside the repository)",
)


def column(path: Path, name: str) -> list[str]:
    with path.open(newline="") as f:
        return [row[name] for row in csv.DictReader(f)]


@needs_orion
def test_resnet50_inference_profile_converts_to_its_measured_duration():
    path = ORION / "resnet50_4_fwd.csv"
    workload = load_orion_csv(path)
    durations = [float(d) for d in column(path, "Duration")]
    assert len(workload.kernels) == len(durations) == 175
    assert workload.profiled_duration_ns == round(sum(durations))
    # Replayed alone on a device of the profiled size, the kernels take what was measured.
    replayed = workload.isolated_duration_ns(PROFILED_SMS // 2)
    assert replayed == pytest.approx(sum(durations), rel=1e-4)
    assert 6.0e6 < replayed < 7.0e6
    profiles = column(path, "Profile")
    assert workload.memory_bound_share == profiles.count("0") / len(profiles)


@needs_orion
@pytest.mark.parametrize("name", sorted(p.name for p in ORION.glob("*.csv")) or ["none"])
def test_every_orion_profile_loads_and_converts(name):
    path = ORION / name
    workload = load_orion_csv(path)
    assert len(workload.kernels) == len(column(path, "Name"))
    assert all(k.block_duration_ns >= 1 and k.blocks_per_tpc == 2 for k in workload.kernels)
    replayed = workload.isolated_duration_ns(PROFILED_SMS // 2)
    assert replayed == pytest.approx(workload.profiled_duration_ns, rel=1e-3)


@needs_orion
def test_the_real_resnet50_summary_matches_the_synthetic_preset():
    real = load_orion_csv(ORION / "resnet50_4_fwd.csv")
    summary = MODELS["resnet50_b4_inference"]
    assert len(real.kernels) == summary.n_kernels
    assert real.profiled_duration_ns == pytest.approx(summary.total_duration_ns, rel=0.01)

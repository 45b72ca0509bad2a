"""Arrival traces: Orion's gaps and Azure's LLM trace, and one clear error per bad file."""

from __future__ import annotations

import json
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.vgpu.sharing.arrivals import (
    ArrivalFormatError,
    ArrivalTrace,
    arrival_times_ns,
    load_arrivals,
    poisson_times_ns,
)
from tests.policies.conftest import WORKLOADS

FILES = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
gap = st.floats(0.0, 10.0, allow_nan=False)


@FILES
@given(st.lists(gap, min_size=1, max_size=30).filter(lambda g: sum(g) > 0))
def test_orion_gaps_load_as_written(tmp_path, gaps):
    path = tmp_path / "gaps.json"
    path.write_text(json.dumps(gaps))
    assert load_arrivals(path).gaps_s == tuple(gaps)


@FILES
@given(
    st.lists(gap, min_size=1, max_size=10),
    st.integers(0, 9),
    st.sampled_from([-1.0, "x", None, True, [1], float("nan")]),
)
def test_a_bad_gap_is_named_by_file_and_item(tmp_path, gaps, at, bad):
    at = min(at, len(gaps))
    gaps.insert(at, bad)
    path = tmp_path / "gaps.json"
    path.write_text(json.dumps(gaps))
    with pytest.raises(ArrivalFormatError) as err:
        load_arrivals(path)
    assert str(path) in str(err.value) and f"item {at}:" in str(err.value)


@pytest.mark.parametrize(
    "text, where",
    [("", "line 1"), ("{}", "JSON list"), ("[", "not JSON"), ("[]", "empty"), ("[0, 0]", "zero")],
)
def test_malformed_gap_files_say_why(tmp_path, text, where):
    path = tmp_path / "gaps.json"
    path.write_text(text)
    with pytest.raises(ArrivalFormatError, match=where):
        load_arrivals(path)


HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens"


def azure_row(second: int, ctx: int = 100, gen: int = 10) -> str:
    return f"2023-11-16 18:17:{second:02d}.9799600,{ctx},{gen}"


@FILES
@given(st.lists(st.integers(0, 59), min_size=2, max_size=20).map(sorted))
def test_azure_timestamps_become_gaps(tmp_path, seconds):
    path = tmp_path / "azure.csv"
    path.write_text("\n".join([HEADER, *map(azure_row, seconds)]))
    if seconds[0] == seconds[-1]:
        with pytest.raises(ArrivalFormatError, match="same TIMESTAMP"):
            load_arrivals(path)
        return
    trace = load_arrivals(path)
    assert trace.gaps_s == pytest.approx([b - a for a, b in pairwise(seconds)])


@pytest.mark.parametrize(
    "rows, line, what",
    [
        ([azure_row(1), "2023-11-16 18:17:02,x,3"], 3, "ContextTokens"),
        ([azure_row(1), "2023-11-16 18:17:02,4,-3"], 3, "GeneratedTokens"),
        ([azure_row(1), "yesterday,4,3"], 3, "TIMESTAMP"),
        ([azure_row(5), azure_row(4)], 3, "back in time"),
        ([azure_row(5), "1,2"], 3, "fields"),
    ],
)
def test_a_bad_azure_row_is_named_by_file_and_line(tmp_path, rows, line, what):
    path = tmp_path / "azure.csv"
    path.write_text("\n".join([HEADER, *rows]))
    with pytest.raises(ArrivalFormatError) as err:
        load_arrivals(path)
    assert f"{path}: line {line}:" in str(err.value) and what in str(err.value)


def test_wrong_columns_and_unknown_formats_are_refused(tmp_path):
    path = tmp_path / "azure.csv"
    path.write_text("time,tokens\n1,2\n")
    with pytest.raises(ArrivalFormatError, match="line 1: columns"):
        load_arrivals(path)
    with pytest.raises(ArrivalFormatError, match="unknown arrival format"):
        load_arrivals(tmp_path / "trace.txt")
    with pytest.raises(ArrivalFormatError, match="cannot read"):
        load_arrivals(tmp_path / "missing.json")


def test_arrival_instants_wrap_around_the_trace_and_stay_in_the_run():
    trace = ArrivalTrace("t", (0.001, 0.002), "test")
    times = arrival_times_ns(trace, 10_000_000)
    assert times[:4] == (1_000_000, 3_000_000, 4_000_000, 6_000_000)
    assert all(t < 10_000_000 for t in times)
    assert arrival_times_ns(trace, 10_000_000, speedup=2.0)[:2] == (500_000, 1_500_000)
    poisson = poisson_times_ns(1000.0, 1_000_000_000, seed=3)
    assert 900 < len(poisson) < 1100 and poisson == poisson_times_ns(1000.0, 1_000_000_000, 3)


@pytest.mark.skipif(not WORKLOADS.is_dir(), reason="../shared/workloads is absent")
def test_the_shared_arrival_traces_load():
    orion = load_arrivals(WORKLOADS / "arrivals" / "orion_inter_arrival_times.json")
    assert len(orion.gaps_s) == 6240 and 15 < orion.mean_rate_per_s < 30
    azure = load_arrivals(WORKLOADS / "arrivals" / "AzureLLMInferenceTrace_code.csv")
    assert len(azure.gaps_s) == 8818

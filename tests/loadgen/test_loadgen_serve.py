"""`serve`: LoadGen's Server scenario against the booted kernel, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import MODEL, short_run

from exp.loadgen import serve
from image import cli


def test_a_short_server_run_is_valid_and_every_query_is_answered(tmp_path):
    out = tmp_path / "serve"
    data = serve(short_run(), out)

    assert data["loadgen"]["result"] == "VALID", (data["loadgen"], data["realtime_lag"])
    assert data["result"] == "VALID"
    queries = data["queries"]
    assert queries["issued"] >= 50
    assert queries["answered"] == queries["served"] == queries["issued"]
    assert queries["failed"] == 0 and data["server"] == "up"
    assert data["latency_bound_met"] is True
    assert data["server_virtual_latency_ms"]["samples"] == queries["issued"]
    assert data["realtime_lag"]["samples"] > 0

    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "results.md"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "results.json").read_text())["loadgen"]["result"] == "VALID"
    events = json.loads((out / "trace.json").read_text())["traceEvents"]
    assert any(e.get("cat") == "gpu" and e["name"].startswith(MODEL) for e in events)
    assert sum(e.get("cat") == "query" for e in events) == queries["served"]


@pytest.mark.slow  # a LoadGen run in wall time, its lag bounded
def test_the_host_keeps_up_with_a_server_beside_a_training_job(tmp_path):
    """The booted kernel keeps pace with the wall clock while it serves
    beside `train:resnet50_b32_training`.  The bounds are loose, for a busy
    host: a kernel that cannot keep up falls behind by about as much as the
    run is long (seconds; `malv bench serve` measures the real figures)."""
    data = serve(
        short_run(colocate=("train:resnet50_b32_training",), min_duration_s=3.0), tmp_path / "s"
    )
    lag = data["realtime_lag"]
    assert lag["samples"] >= 100, lag
    assert lag["p50_ms"] < 500 and lag["max_ms"] < 2_500, lag
    assert data["loadgen"]["result"] == "VALID"


def test_compare_runs_each_policy_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["serve", "--loadgen", "Server", "--compare", "mps,lithos", "--out", str(out),
            "--min-duration-s", "0.5", "--min-queries", "5", "--latency-bound-ms", "10000"]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| mps |" in printed and "| lithos |" in printed
    data = json.loads((out / "results.json").read_text())
    assert data["compare"] == ["mps", "lithos"]
    for policy in ("mps", "lithos"):
        run = data["runs"][policy]
        assert run["settings"]["policy"] == policy
        assert run["queries"]["answered"] == run["queries"]["issued"] >= 5
        assert (out / policy / "mlperf_log_summary.txt").exists()
    assert "| lithos |" in (out / "results.md").read_text()


ORION = Path(__file__).resolve().parents[2].parent / "shared" / "workloads" / "orion"


@pytest.mark.slow  # a LoadGen run in wall time
@pytest.mark.skipif(
    not (ORION / "resnet50_4_fwd.csv").is_file(), reason=f"the Orion profiles are not in {ORION}"
)
def test_the_server_runs_a_real_profile_beside_a_real_training_profile(tmp_path):
    model, training = ORION / "resnet50_4_fwd.csv", ORION / "resnet50_32_fb1.csv"
    out = tmp_path / "orion"
    settings = short_run(
        model=str(model), colocate=(f"train:{training}",), min_queries=20, min_duration_s=1.0
    )
    data = serve(settings, out)
    queries = data["queries"]
    assert data["server_models"] == ["resnet50_4_fwd"]
    assert queries["served"] == queries["issued"] >= 20
    events = json.loads((out / "trace.json").read_text())["traceEvents"]
    assert len({e["tid"] for e in events if e.get("cat") == "gpu"}) == 2  # server, training


def test_a_server_with_two_streams_runs_two_queries_at_once(tmp_path):
    out = tmp_path / "offline"
    settings = short_run(scenario="Offline", server_streams=2, min_queries=16, min_duration_s=0.2)
    data = serve(settings, out)
    queries = data["queries"]
    assert queries["served"] == queries["issued"] >= 16
    slices = sorted(
        (e["ts"], e["ts"] + e["dur"])
        for e in json.loads((out / "trace.json").read_text())["traceEvents"]
        if e.get("cat") == "query"
    )
    # Offline issues every query at once: with two streams, one starts before the last ends.
    assert any(later[0] < earlier[1] for earlier, later in zip(slices, slices[1:], strict=False))

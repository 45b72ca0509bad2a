"""`malv serve --find-peak`, the lag's percentiles, and `malv bench serve`'s figures."""

from __future__ import annotations

import json

import pytest
from conftest import short_run

from bench import serve as bench_serve
from exp.loadgen import find_peak
from exp.loadgen import run as run_module
from exp.loadgen.session import LagMeter
from image import cli


class Clock:
    """A loop whose virtual time lags the wall clock by what a test sets."""

    def __init__(self) -> None:
        self.now_ns = 0
        self.lag_ns = 0

    def wall_virtual_ns(self) -> int:
        return self.now_ns + self.lag_ns


def test_the_lag_meter_reports_nearest_rank_percentiles():
    meter, clock = LagMeter(period_ns=10_000_000), Clock()
    for lag_ms in [0] * 98 + [7, 60]:
        clock.lag_ns = lag_ms * 1_000_000
        meter.sample(clock)
    report = meter.report()
    assert report["p50_ms"] == 0 and report["p99_ms"] == 7 and report["max_ms"] == 60
    assert report["behind_share"] == 0.01 and not report["kept_up"]  # one sample over 10 ms


def test_the_peak_search_doubles_then_bisects_to_the_highest_valid_rate(tmp_path, monkeypatch):
    """The search's arithmetic against a system that holds anything below 37 QPS."""
    asked: list[float] = []

    def fake_serve(settings, out):
        asked.append(settings.qps)
        return {"result": "VALID" if settings.qps < 37 else "INVALID"}

    monkeypatch.setattr(run_module, "serve", fake_serve)
    data = find_peak(short_run(qps=10.0), ("mps",), tmp_path / "peak")
    peak = data["find_peak"]["mps"]
    assert asked[:3] == [10.0, 20.0, 40.0]  # doubled until not VALID
    assert 37 * 0.9 <= peak["peak_qps"] < 37 <= peak["first_invalid_qps"]
    assert peak["first_invalid_qps"] - peak["peak_qps"] <= 0.1 * peak["first_invalid_qps"]
    assert json.loads((tmp_path / "peak" / "results.json").read_text())["find_peak"]["mps"]


def test_a_policy_valid_nowhere_has_a_peak_of_zero(tmp_path, monkeypatch):
    monkeypatch.setattr(run_module, "serve", lambda settings, out: {"result": "INVALID"})
    peak = find_peak(short_run(qps=8.0), ("mps",), tmp_path / "peak")["find_peak"]["mps"]
    assert peak["peak_qps"] == 0 and peak["first_invalid_qps"] < run_module.PEAK_FLOOR_QPS


def test_find_peak_from_the_command_line_runs_loadgen_and_prints_the_peaks(
    tmp_path, capsys, monkeypatch
):
    """Real LoadGen runs, short: the search starts just under its ceiling, so
    one VALID run ends it."""
    monkeypatch.setattr(run_module, "PEAK_CEILING_QPS", 300.0)
    out = tmp_path / "peak"
    argv = ["serve", "--loadgen", "Server", "--find-peak", "--qps", "200", "--out", str(out),
            "--min-duration-s", "0.3", "--min-queries", "5", "--latency-bound-ms", "100000",
            "--query-timeout-s", "60"]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr()
    assert "| lithos |" in printed.out and "lithos at 200 QPS: VALID" in printed.err
    data = json.loads((out / "results.json").read_text())["find_peak"]["lithos"]
    assert data == {"peak_qps": 200.0, "first_invalid_qps": None, "runs": {"200": "VALID"}}
    assert (out / "lithos" / "qps-200" / "mlperf_log_summary.txt").exists()


@pytest.mark.slow  # LoadGen runs in wall time
def test_bench_serve_reports_the_lag_and_wall_beside_virtual(monkeypatch):
    """One real run under each policy, shortened: every figure is there and
    consistent.  Whether the host keeps up beside the training job is the
    benchmark's to say, not a test's (it depends on the host's load)."""
    monkeypatch.setattr(bench_serve, "one_run", lambda policy, seed, seconds: _short(policy, seed))
    figures = {f.name: f for f in bench_serve.run(quick=True)}
    for policy in bench_serve.POLICIES:
        p99, top = figures[f"serve.{policy}.run0.lag_p99"], figures[f"serve.{policy}.run0.lag_max"]
        assert p99.target == "<= 5" and top.target == "<= 50"
        assert 0 <= figures[f"serve.{policy}.run0.lag_p50"].value <= p99.value <= top.value
        wall = figures[f"serve.{policy}.run0.wall_p90"]
        assert wall.baseline is not None and wall.baseline > 0 and wall.value > 0
        assert figures[f"serve.{policy}.run0.valid"].value in (0.0, 1.0)


def _short(policy: str, seed: int) -> dict:
    import tempfile
    from pathlib import Path

    settings = short_run(policy=policy, seed=seed, colocate=bench_serve.COLOCATE)
    with tempfile.TemporaryDirectory() as tmp:
        return run_module.serve(settings, Path(tmp) / "serve")

"""MLPerf LoadGen's side of a run: its test settings, the SUT and QSL it
calls back, and its summary log read back (`exp/loadgen`).

LoadGen (`mlcommons-loadgen`, module `mlperf_loadgen`) issues queries in
wall time from its own thread, through `issue_queries`, and waits for a
`QuerySamplesComplete` for every sample it issued.  Its logs
(mlperf_log_summary.txt, mlperf_log_detail.txt) are written to the run's
output directory; the VALID/INVALID verdict and the latency percentiles
reported are the ones read back from its summary.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from exp.loadgen.settings import ServeSettings

INSTALL_HINT = "MLPerf LoadGen is not installed: pip install mlcommons-loadgen"
MULTI_STREAM_SAMPLES = 8  # MLPerf's samples per MultiStream query
SUMMARY = "mlperf_log_summary.txt"


class LoadgenMissing(RuntimeError):
    """The optional dependency is not installed; the message says how to install it."""


def import_loadgen() -> ModuleType:
    try:
        import mlperf_loadgen
    except ImportError:
        raise LoadgenMissing(INSTALL_HINT) from None
    return mlperf_loadgen


def test_settings(lg: ModuleType, s: ServeSettings) -> Any:
    """LoadGen's TestSettings for a run: performance only, the scenario's target and bound."""
    t = lg.TestSettings()
    t.scenario = getattr(lg.TestScenario, s.scenario)
    t.mode = lg.TestMode.PerformanceOnly
    bound_ns = int(s.latency_bound_ms * 1e6)
    percentile = s.latency_percentile / 100
    if s.scenario == "Server":
        t.server_target_qps = s.qps
        t.server_target_latency_ns = bound_ns
        t.server_target_latency_percentile = percentile
    elif s.scenario == "SingleStream":
        t.single_stream_expected_latency_ns = bound_ns
        t.single_stream_target_latency_percentile = percentile
    elif s.scenario == "MultiStream":
        t.multi_stream_samples_per_query = MULTI_STREAM_SAMPLES
        t.multi_stream_expected_latency_ns = bound_ns
        t.multi_stream_target_latency_percentile = percentile
    else:
        t.offline_expected_qps = s.qps
    t.min_duration_ms = int(s.min_duration_s * 1000)
    t.min_query_count = s.min_queries
    for seed in ("qsl_rng_seed", "sample_index_rng_seed", "schedule_rng_seed"):
        setattr(t, seed, s.seed)
    return t


def run_test(
    lg: ModuleType,
    s: ServeSettings,
    issue: Callable[[list[tuple[int, int]]], None],
    out_dir: Path,
) -> None:
    """Run LoadGen's test; `issue` gets each query's (sample id, sample index)
    pairs on LoadGen's thread.  Returns when every sample was answered."""

    def issue_queries(samples: list[Any]) -> None:
        issue([(sample.id, sample.index) for sample in samples])

    def flush_queries() -> None:
        pass

    def load_samples(indices: list[int]) -> None:
        pass  # the samples are the model names: nothing to load

    log_output = lg.LogOutputSettings()
    log_output.outdir = str(out_dir)
    log_output.copy_summary_to_stdout = False
    log_settings = lg.LogSettings()
    log_settings.log_output = log_output
    log_settings.enable_trace = False
    sut = lg.ConstructSUT(issue_queries, flush_queries)
    qsl = lg.ConstructQSL(s.samples, s.samples, load_samples, load_samples)
    # Not in a `finally`: a test cut short (Ctrl-C in a callback) leaves
    # LoadGen's threads running, and they may still call these.
    lg.StartTestWithLogSettings(sut, qsl, test_settings(lg, s), log_settings)
    lg.DestroyQSL(qsl)
    lg.DestroySUT(sut)


def respond(lg: ModuleType) -> Callable[[list[int]], None]:
    """LoadGen's QuerySamplesComplete for sample ids (no response data)."""

    def complete(sample_ids: list[int]) -> None:
        lg.QuerySamplesComplete([lg.QuerySampleResponse(i, 0, 0) for i in sample_ids])

    return complete


_LINE = re.compile(r"^\s*([^:]+?)\s*:\s*(.+?)\s*$")
_PERCENTILE = re.compile(r"^([\d.]+) percentile latency \(ns\)$")


def read_summary(out_dir: Path) -> dict[str, Any]:
    """LoadGen's verdict, throughput and latencies, from its summary log."""
    fields: dict[str, str] = {}
    for line in (out_dir / SUMMARY).read_text().splitlines():
        m = _LINE.match(line)
        if m and m.group(1) not in fields:
            fields[m.group(1)] = m.group(2)
    latency_ms = {}
    for key, value in fields.items():
        m = _PERCENTILE.match(key)
        if m:
            latency_ms[f"p{float(m.group(1)):g}"] = int(value) / 1e6
    for key in ("Min", "Mean", "Max"):
        if f"{key} latency (ns)" in fields:
            latency_ms[key.lower()] = int(fields[f"{key} latency (ns)"]) / 1e6
    # Server and Offline report samples per second; the stream scenarios, QPS.
    per_second = next((k for k in fields if "per second" in k or k.startswith("QPS")), None)
    return {
        "result": fields.get("Result is", "unknown"),
        "throughput_name": per_second,
        "throughput": float(fields[per_second]) if per_second else None,
        "latency_ms": latency_ms,
        "constraints": {
            k.strip(): v == "Yes" for k, v in fields.items() if k.strip().endswith("satisfied")
        },
    }

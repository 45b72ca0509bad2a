"""`malv exp vms`: three guests on one vGPU under each virtualization mode,
and two guests choosing their own memory policies."""

from __future__ import annotations

import json
import math

import pytest

from exp import vms


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """`malv exp vms --quick` run once for the module: (its out directory, its results.json)."""
    out = tmp_path_factory.mktemp("vms") / "out"
    assert vms.main(["--quick", "--quiet", "--out", str(out)]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_each_mode_serves_every_vm_and_reports_the_inference_tail(results):
    _out, data = results
    assert [m["mode"] for m in data["modes"]] == ["timeslice", "mig", "lithos"]
    for m in data["modes"]:
        assert m["requests"] > 10 and m["train_kernels"] > 0 and m["switch_kernels"] > 0
        low, high = m["p99_ci_ms"]
        assert 0 < m["p50_ms"] <= m["p99_ms"] and low <= m["p99_ms"] <= high
        assert m["kernels_per_s"] > 0 and not math.isnan(m["kernels_per_s"])


def test_only_the_vm_that_switched_its_policy_runs_it(results):
    _out, data = results
    for m in data["modes"]:
        assert m["switch_sched"] == "mlfq" and m["others_sched"] == ["default", "default"]
        assert 0 < m["switched_at_ms"] < data["settings"]["duration_ms"]


def test_only_the_vm_that_chose_the_learned_advisor_faults_less(results):
    _out, data = results
    choice = data["choice"]
    assert choice["modules"] == {"a": "lru", "b": "learned_warmth"}
    assert choice["chosen"]["b"] < choice["default"]["b"]
    assert choice["chosen"]["a"] >= choice["default"]["a"]


def test_it_writes_a_table_plots_and_a_trace_with_a_track_group_per_vm(results):
    out, _data = results
    assert "| mode |" in (out / "results.md").read_text()
    for png in ("latency.png", "faults.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    trace = json.loads((out / "trace.json").read_text())
    groups = {e["args"]["name"] for e in trace["traceEvents"] if e.get("name") == "process_name"}
    assert {g.split()[1] for g in groups} == {"infer", "train", "switch"}
    assert any(e.get("name") == "request" for e in trace["traceEvents"])

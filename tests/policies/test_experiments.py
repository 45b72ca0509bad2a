"""`malv exp stacking|hybrid|rightsizing|dvfs`: outputs, bad input, all-or-nothing writing."""

from __future__ import annotations

import json

import attrs
import pytest

from exp.sharing import RunJob, run_job
from image.cli import main as malv
from kernel.mlaas.faults import ModuleError
from tests.policies.conftest import WORKLOADS

QUICK = ["--duration", "0.08", "--jobs", "1", "--quiet", "--min-requests", "1"]


def test_stacking_writes_results_table_plots_and_a_trace(tmp_path):
    out = tmp_path / "stacking"
    assert malv(["exp", "stacking", *QUICK, "--policies", "mps,lithos", "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"results.json", "results.md", "timing.json", "latency_cdf.png", "bars.png",
            "trace.json"} <= names  # fmt: skip
    assert "lithos_tpcs.png" in names
    data = json.loads((out / "results.json").read_text())
    assert {(r["policy"], r["tenant"]) for r in data["records"]} == {
        (p, t) for p in ("mps", "lithos") for t in ("HP A", "HP B", "BE")
    }
    for r in data["records"]:
        assert {"p50_ms", "p95_ms", "p99_ms", "slo_attainment", "throughput_rps", "tpc_seconds",
                "energy_j", "avg_power_w"} <= set(r)  # fmt: skip
    # How long the runs took on the host is kept apart from the seeded results.
    assert "sim_to_wall" not in data and all("wall_s" not in r for r in data["runs"].values())
    timing = json.loads((out / "timing.json").read_text())
    assert {"mps", "lithos"} <= set(timing["sim_to_wall"]) == set(timing["wall_s"])
    assert "mps_vs_lithos_p99" in data["comparisons"]
    trace = json.loads((out / "trace.json").read_text())
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert slices and all({"ts", "dur", "pid", "tid"} <= set(e) for e in slices)
    assert "| policy | tenant |" in (out / "results.md").read_text()


@pytest.mark.slow  # whole experiments
def test_hybrid_rightsizing_and_dvfs_run(tmp_path):
    assert (
        malv(["exp", "hybrid", *QUICK, "--policies", "priority", "--out", str(tmp_path / "h")]) == 0
    )
    for name in ("rightsizing", "dvfs"):
        out = tmp_path / name
        assert malv(["exp", name, *QUICK, "--models", "mobilenetv2", "--out", str(out)]) == 0
        data = json.loads((out / "results.json").read_text())
        assert "mobilenetv2" in data["summary"]["models"]
        assert (out / f"{name}.png").exists()


def test_bad_input_is_one_clear_line_and_leaves_nothing_behind(tmp_path, capsys):
    out = tmp_path / "out"
    assert malv(["exp", "stacking", *QUICK, "--policies", "mps,fifo", "--out", str(out)]) == 2
    assert "unknown policy 'fifo'" in capsys.readouterr().err
    bad = tmp_path / "gaps.json"
    bad.write_text("[0.1, -2]")
    assert malv(["exp", "stacking", *QUICK, "--arrivals", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "item 1" in err[0]
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["gaps.json"]


def test_out_must_be_new_or_an_earlier_result(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert malv(["exp", "dvfs", *QUICK, "--models", "mobilenetv2", "--out", str(tmp_path)]) == 2
    assert "does not hold earlier results" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.slow  # a whole experiment
@pytest.mark.skipif(not WORKLOADS.is_dir(), reason="../shared/workloads is absent")
def test_stacking_on_the_orion_traces_protects_hp_under_lithos_not_mps(tmp_path):
    out = tmp_path / "orion"
    args = ["exp", "stacking", "--duration", "0.6", "--jobs", "2", "--quiet",
            "--policies", "mps,lithos", "--out", str(out), "--min-requests", "10",
            "--trace-dir", str(WORKLOADS / "orion"),
            "--arrivals", str(WORKLOADS / "arrivals" / "orion_inter_arrival_times.json")]  # fmt: skip
    assert malv(args) == 0
    c = json.loads((out / "results.json").read_text())["comparisons"]
    assert c["mps_vs_lithos_p99"] > 2.0
    assert c["lithos_vs_isolated_p99"] < 1.5


def test_a_malformed_kernel_profile_is_named_by_file_and_line(tmp_path, capsys):
    traces = tmp_path / "orion"
    traces.mkdir()
    (traces / "resnet50_4_fwd.csv").write_text(
        "Name,Profile,Memory_footprint,SM_usage,Duration\nConv,1,0,98,100480\nBN,0,0,64,-5\n"
    )
    out = tmp_path / "out"
    assert malv(["exp", "stacking", *QUICK, "--trace-dir", str(traces), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resnet50_4_fwd.csv: line 3" in err[0] and "Duration" in err[0]
    assert not out.exists()


def test_each_run_selects_its_policy_by_inserting_the_module_into_a_headless_kernel(
    small_tenants,
):
    job = RunJob("lithos", "lithos", {"dvfs": True, "atom_max_us": 300}, small_tenants, 0,
                 20_000_000, 0, "a100")  # fmt: skip
    result = run_job(job)
    assert result.policy == "lithos+dvfs"  # the module's parameters reached the policy
    assert all(s.completed > 0 for s in result.streams)
    # A parameter the module does not declare is refused by insmod, as in the shell.
    with pytest.raises(ModuleError, match="gpu_lithos has no parameter 'nope'"):
        run_job(attrs.evolve(job, params={"nope": 1}))

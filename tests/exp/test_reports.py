"""The sharing experiments' reports: provenance in the head of results.md,
arrival labels, placeholder profiles refused or marked, notes written from
the run's figures, the right-sizing and DVFS inputs, and the plots."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.vgpu.errors import InvalidArgument
from exp.scenario import load_scenario, parse_scenario, shipped
from exp.sharing import check_inputs, plots, sharing_parser
from exp.sharing.notes import colocation_notes
from exp.sharing.tables import colocation_report, setup_line
from exp.sharing.tenants import arrivals_label
from image.cli import main as malv
from tests.policies.conftest import WORKLOADS

HP = {"name": "HP A", "model": "resnet50", "arrivals": "poisson", "rate_per_s": 20.0}
QUICK = ["--duration", "0.05", "--jobs", "1", "--quiet", "--min-requests", "1"]


def args_of(*argv: str):
    return sharing_parser("t", "", duration_s=1.0, policies=None).parse_args(list(argv))


def placeholder_profile(path):
    """An Orion `*_fb0`-style kernel list: every row `-1,1,1,7`."""
    rows = "".join(f"k{i},-1,1,1,7\n" for i in range(40))
    path.write_text("Name,Profile,Memory_footprint,SM_usage,Duration\n" + rows)
    return path


@pytest.mark.skipif(not WORKLOADS.is_dir(), reason="../shared/workloads is absent")
def test_the_head_of_results_names_each_profile_and_the_devices():
    scenario = load_scenario(shipped("orion-stacking"))
    tenants = [{"name": r.name, "model": r.model, "profile": r.profile, "measured_on": "v100",
                "kind": r.kind, "quota": 0.3, "placeholder": None} for r in scenario.roles]  # fmt: skip
    cfg = {"gpu": "a100", "simulated_on": "a100", "trace_dir": None, "tenants": tenants}
    line = setup_line(cfg)
    assert "synthetic" not in line and "GPU simulated: a100" in line
    for name in ("resnet50_4_fwd.csv", "resnet101_4_fwd.csv", "bert_2_fwd.csv"):
        assert name in line
    assert line.count("measured on the v100, carried to the a100") == 3


def test_built_in_models_are_called_synthetic_and_drawn_for_the_gpu_simulated():
    tenants = [{"name": "HP A", "model": "resnet50", "profile": None, "measured_on": "h100"}]
    line = setup_line({"gpu": "h100", "trace_dir": None, "tenants": tenants})
    assert "resnet50 (built-in synthetic model, drawn for the h100)" in line
    traced = setup_line(
        {"gpu": "a100", "trace_dir": "/p", "tenants": [{**tenants[0], "measured_on": "v100"}]}
    )
    assert "/p/resnet50_4_fwd.csv (measured on the v100, carried to the a100)" in traced


def test_file_arrivals_are_labelled_with_the_trace_and_its_rate(tmp_path):
    gaps = tmp_path / "gaps.json"
    gaps.write_text(json.dumps([0.1, 0.3]))  # 2 requests in 0.4 s: 5/s
    tenant = {"name": "HP A", "model": "resnet50", "arrivals": "file", "file": "gaps.json",
              "speedup": 2.0}  # fmt: skip
    roles = parse_scenario({"tenants": [tenant]}, str(tmp_path / "s.toml")).roles
    assert arrivals_label(roles, args_of()) == "trace gaps.json (10/s, speed-up 2)"
    poisson = parse_scenario({"tenants": [HP]}, "s.toml").roles
    assert arrivals_label(poisson, args_of()) == "poisson 20/s"
    assert arrivals_label(poisson, args_of("--arrivals", str(gaps))) == "trace gaps.json (5/s)"
    both = parse_scenario({"tenants": [HP, {**tenant, "name": "HP C"}]}, str(tmp_path / "s.toml"))
    assert arrivals_label(both.roles, args_of()) == (
        "HP A: poisson 20/s; HP C: trace gaps.json (10/s, speed-up 2)"
    )


def test_a_placeholder_profile_is_refused_unless_allowed(tmp_path):
    profile = placeholder_profile(tmp_path / "m_fb0.csv")
    roles = parse_scenario(
        {"tenants": [{"name": "HP A", "profile": "m_fb0.csv"}]}, str(tmp_path / "s.toml")
    ).roles
    with pytest.raises(InvalidArgument, match="m_fb0.csv.*--allow-placeholder") as err:
        check_inputs(roles, args_of(), [0], 100_000_000, 10_000_000)
    assert "\n" not in str(err.value) and str(profile) in str(err.value)
    check_inputs(roles, args_of("--allow-placeholder"), [0], 100_000_000, 10_000_000)


def test_an_allowed_placeholder_is_marked_in_results_json_and_md(tmp_path, capsys):
    profile = placeholder_profile(tmp_path / "m_fb0.csv")
    refused = [
        "exp",
        "rightsizing",
        *QUICK,
        "--models",
        str(profile),
        "--out",
        str(tmp_path / "no"),
    ]
    assert malv(refused) == 2
    assert "--allow-placeholder" in capsys.readouterr().err and not (tmp_path / "no").exists()
    out = tmp_path / "out"
    assert malv([*refused[:-1], str(out), "--allow-placeholder"]) == 0
    source = json.loads((out / "results.json").read_text())["config"]["sources"][0]
    assert source["name"] == "m_fb0" and "implausible" in source["placeholder"]
    assert "Placeholder profiles" in (out / "results.md").read_text()


def test_dvfs_and_rightsizing_take_a_scenario_and_profile_paths(tmp_path):
    scenario = tmp_path / "one.toml"
    scenario.write_text('[[tenants]]\nname = "svc"\nmodel = "mobilenetv2"\nmeasured_on = "v100"\n')
    out = tmp_path / "dvfs"
    assert malv(["exp", "dvfs", *QUICK, "--scenario", str(scenario), "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["models"] == ["svc"] and list(data["summary"]["models"]) == ["svc"]
    assert data["config"]["sources"][0]["measured_on"] == "v100"
    md = (out / "results.md").read_text()
    assert "carried to the a100" in md and "**Devices.**" in md
    assert "Orion's own H100 profiles" in md  # what the carrying model was checked against
    assert (
        malv(["exp", "rightsizing", *QUICK, "--models", "nope.csv", "--out", str(tmp_path / "r")])
        == 2
    )


def colocation_data(be_share: float, unstable: bool) -> dict:
    """A results.json of two policies and two tenants, as the notes read it."""
    tenants = [
        {"name": "HP A", "model": "resnet50", "profile": None, "kind": "open", "quota": 0.6,
         "sized": True, "measured_on": "a100", "placeholder": None},
        {"name": "BE", "model": "bert", "profile": None, "kind": "be", "quota": 0.4,
         "sized": False, "measured_on": "a100", "placeholder": None},
    ]  # fmt: skip

    def rec(policy, tenant, p99, share, unstable=False):
        return {"policy": policy, "tenant": tenant, "kind": "open" if tenant == "HP A" else "be",
                "requests": 500, "p99_ms": p99, "p99_vs_isolated": p99 / 10, "unstable": unstable,
                "unfinished": 90 if unstable else 0, "throughput_vs_isolated": share,
                "avg_power_w": 200.0, "p50_ms": p99 / 2, "p95_ms": p99, "p99_ci_ms": None,
                "slo_attainment": None, "throughput_rps": 10.0, "tpc_seconds": 1.0,
                "energy_j": 100.0}  # fmt: skip

    return {
        "config": {
            "gpu": "a100",
            "trace_dir": None,
            "tenants": tenants,
            "arrivals": "poisson 20.8/s",
        },  # fmt: skip
        "records": [
            rec("mps", "HP A", 40.0, 1.0, unstable),
            rec("mps", "BE", 0, 0.9),
            rec("reef", "HP A", 11.0, 1.0),
            rec("reef", "BE", 0, be_share),
            rec("lithos", "HP A", 11.5, 1.0),
            rec("lithos", "BE", 0, 0.6),
        ],  # fmt: skip
        "isolated": [
            {
                "tenant": "HP A",
                "throughput_rps": 20.0,
                "mean_ms": 6.0,
                "p99_ms": 10.0,
                "p50_ms": 6.0,
            },
            {
                "tenant": "BE",
                "throughput_rps": 30.0,
                "mean_ms": 30.0,
                "p99_ms": 40.0,
                "p50_ms": 30.0,
            },
        ],  # fmt: skip
        "comparisons": {"tenant": "HP A"},
    }


def test_the_notes_are_written_from_the_runs_figures():
    calm = colocation_notes(colocation_data(be_share=0.9, unstable=False))
    assert "12% of the time" in calm and "4.00x its isolated P99" in calm
    assert "Starved" not in calm and "Unstable" not in calm
    rough = colocation_notes(colocation_data(be_share=0.05, unstable=True))
    assert "BE under reef 5%" in rough and "mps (HP A, 90 left)" in rough
    assert rough != calm


@settings(max_examples=40, deadline=None)
@given(share=st.floats(0.0, 2.0), unstable=st.booleans(), p99=st.floats(0.01, 1e6))
def test_any_figures_give_notes_and_a_report(share, unstable, p99):
    data = colocation_data(share, unstable)
    data["records"][4]["p99_ms"] = p99
    data["runs"] = {}
    data["config"].update(duration_s=1.0, warmup_s=0.1, seeds=[0], slo_factor=2.0)
    report = colocation_report(data, "T", [])
    assert "## Why ours differ" in report and "HP A = resnet50" in report
    assert ("Starved" in report) == (share < 0.2)


class KeptFigures:
    """pyplot, but figures stay open for the test to read."""

    def __init__(self, plt):
        self.plt, self.figures = plt, []

    def __getattr__(self, name):
        return getattr(self.plt, name)

    def subplots(self, *a, **kw):
        fig, axes = self.plt.subplots(*a, **kw)
        self.figures.append(fig)
        return fig, axes

    def close(self, fig):
        pass


def test_bars_use_a_log_latency_axis_and_mark_unstable_queues(tmp_path, monkeypatch):
    kept = KeptFigures(plots.pyplot())
    monkeypatch.setattr(plots, "pyplot", lambda: kept)
    rows = copy.deepcopy(colocation_data(0.5, unstable=True)["records"])
    for r in rows:
        r["p99_ci_ms"] = [r["p99_ms"] * 0.9, r["p99_ms"] * 1.1]
    plots.plot_bars(str(tmp_path / "bars.png"), rows, [("p99_ms", "P99 (ms)"),
                                                       ("throughput_vs_isolated", "x")])  # fmt: skip
    latency, throughput = kept.figures[0].axes[:2]
    assert latency.get_yscale() == "log" and throughput.get_yscale() == "linear"
    hatched = [p for p in latency.patches if p.get_hatch() == "xx"]
    assert len(hatched) == 1  # mps's HP A, whose queue does not drain
    legend = kept.figures[0].legends[0]
    assert "unstable (queue does not drain)" in [t.get_text() for t in legend.get_texts()]
    assert (tmp_path / "bars.png").stat().st_size > 0


def test_mig_on_the_v100_preset_is_said_to_be_no_real_v100s():
    data = colocation_data(0.9, unstable=False)
    for r in data["records"]:
        r["policy"] = "mig" if r["policy"] == "reef" else r["policy"]
    assert "No MIG" not in colocation_notes(data)
    data["config"]["gpu"] = "v100"
    assert "No MIG on a real V100" in colocation_notes(data)

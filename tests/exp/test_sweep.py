"""`malv exp sweep`: the cross product, merged curves with intervals, resume,
unstable queues, bad axes, and the same sweep on a local Ray."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from exp import sweep
from exp.sweep.axes import parse_vary
from exp.sweep.store import run_point
from image.cli import main as malv

#: A small sweep of the shipped stacking scenario (synthetic models).
TINY = ["exp", "sweep", "exp/scenarios/stacking.toml", "--duration", "0.1", "--vary", "load=1,2",
        "--vary", "seed=0:1", "--vary", "slip=1.1", "--policies", "mps,lithos",
        "--mechanisms", "dvfs", "--min-requests", "1", "--jobs", "1", "--quiet"]  # fmt: skip
POINTS = 2 * (3 + 2) + 1  # per load: 3 tenants alone, 2 policies; DVFS at load 1


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """The out directory of one tiny sweep (`TINY`), run once for the module."""
    out = tmp_path_factory.mktemp("sweep") / "out"
    assert malv([*TINY, "--out", str(out)]) == 0
    return out


def test_a_sweep_merges_its_points_into_curves_with_intervals(tiny_sweep):
    names = {p.name for p in tiny_sweep.iterdir()}
    assert {"results.json", "results.md", "timing.json", "p99_vs_load.png", "ratio_vs_load.png",
            "dvfs_pareto.png", "points"} <= names  # fmt: skip
    assert not [n for n in names if n.startswith(".")]  # nothing half-written
    data = json.loads((tiny_sweep / "results.json").read_text())
    assert data["config"]["points"] == POINTS and data["tenant"] == "HP A"
    assert {(r["load"], r["policy"]) for r in data["records"] if r["tenant"] == "HP A"} == {
        (load, p) for load in (1.0, 2.0) for p in ("mps", "lithos")
    }
    for r in data["records"]:
        lo, hi = r["p99_ci_ms"]
        assert r["kind"] == "be" or (r["requests"] > 0 and lo <= r["p99_ms"] <= hi)
        assert "unstable" in r
    for c in data["curves"]:
        assert c["mps_vs_lithos_p99"] > 0 and len(c["mps_vs_lithos_p99_ci"]) == 2
    (dvfs,) = data["pareto"]
    assert dvfs["slip"] == 1.1 and set(dvfs["p99_cost"]) == {"HP A", "HP B"}
    assert "keeps_slip" in dvfs and "energy_saved" in dvfs
    assert "## HP A P99 against load" in (tiny_sweep / "results.md").read_text()


def test_a_sweep_started_again_skips_the_points_it_has(tiny_sweep, capsys):
    before = (tiny_sweep / "results.json").read_text()
    points = sorted((tiny_sweep / "points").glob("*/*.json"))
    assert len(points) == POINTS
    points[0].unlink()  # as if interrupted before this point was written
    assert malv([*TINY, "--out", str(tiny_sweep)]) == 0
    assert f"resuming: {POINTS - 1} of {POINTS} points" in capsys.readouterr().err
    assert (tiny_sweep / "results.json").read_text() == before


def test_an_interrupted_sweep_keeps_the_points_it_finished(tmp_path, capsys, monkeypatch):
    def one_point_then_ctrl_c(jobs, workers, done):
        done(0, run_point(jobs[0]))
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "run_local", one_point_then_ctrl_c)
    out = tmp_path / "out"
    assert malv([*TINY, "--out", str(out)]) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    assert len(list((out / "points").glob("*/*.json"))) == 1
    assert sorted(p.name for p in out.iterdir()) == ["points"]  # nothing half-written
    assert not [p for p in (out / "points").rglob(".*")]


def test_a_queue_that_does_not_drain_is_unstable_and_gets_no_ratio(tmp_path):
    scenario = tmp_path / "overload.toml"
    scenario.write_text(
        '[[tenants]]\nname = "HP A"\nmodel = "resnet50"\narrivals = "poisson"\n'
        "rate_per_s = 1000.0\nsized = true\n"
        '[[tenants]]\nname = "BE"\nmodel = "bert"\npriority = "best-effort"\n'
    )
    out = tmp_path / "out"
    args = ["exp", "sweep", str(scenario), "--duration", "0.15", "--vary", "load=1",
            "--vary", "seed=0:1", "--policies", "mps,lithos", "--mechanisms", "none",
            "--jobs", "1", "--quiet", "--out", str(out)]  # fmt: skip
    assert malv(args) == 0
    data = json.loads((out / "results.json").read_text())
    assert all(r["unstable"] and r["unfinished"] > 0 for r in data["records"]
               if r["tenant"] == "HP A")  # fmt: skip
    (curve,) = data["curves"]
    assert curve["mps_vs_lithos_p99"] is None and "mps" in curve["mps_vs_lithos_p99_unstable"]
    assert "unstable" in (out / "results.md").read_text()


def test_vary_reads_ranges_spaced_points_and_lists():
    axes = parse_vary(["load=0.25:4:5", "slip=1.05,1.2"], (0, 1, 2))
    assert axes == {"load": (0.25, 0.5, 1.0, 2.0, 4.0), "seed": (0, 1, 2), "slip": (1.05, 1.2)}
    assert parse_vary(["seed=3:5", "load=1"], (0,))["seed"] == (3, 4)
    assert parse_vary(["seed=0,7"], (0,))["seed"] == (0, 7)


@pytest.mark.parametrize(
    "option, message",
    [
        (["--vary", "heat=1:2:3"], "NAME one of load, seed, slip"),
        (["--vary", "load=4:1:3"], "LOW <= HIGH"),
        (["--vary", "slip=0.9"], "every slip must be above 1"),
        (["--vary", "seed=a:b"], "'a' is not an integer"),
        (["--vary", "load=0,1"], "must be a positive finite number, got '0'"),
        (["--mechanisms", "turbo"], "unknown 'turbo'"),
        (["--pareto-load", "3"], "--pareto-load 3 is not one of the loads"),
    ],
)
def test_a_bad_sweep_option_is_one_line_and_writes_nothing(tmp_path, capsys, option, message):
    out = tmp_path / "out"
    assert malv([*TINY, *option, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()


def test_ray_missing_is_one_line_saying_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert malv([*TINY, "--ray", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install -e '.[ray]'" in err[0]


@pytest.mark.slow  # starts a local Ray
def test_the_same_sweep_on_a_local_ray_gives_the_same_results(tiny_sweep, tmp_path):
    pytest.importorskip("ray", reason="Ray is the optional extra malvos[ray]")
    out = tmp_path / "ray"
    shutil.copytree(tiny_sweep, out)
    redo = sorted((out / "points").glob("*/*load2*.json"))
    for point in redo:  # these points run again, as Ray tasks
        point.unlink()
    assert malv([*TINY, "--ray", "--out", str(out)]) == 0
    assert len(list((out / "points").glob("*/*.json"))) == POINTS
    local = json.loads((tiny_sweep / "results.json").read_text())
    on_ray = json.loads((out / "results.json").read_text())
    assert redo and on_ray["records"] == local["records"] and on_ray["curves"] == local["curves"]
    assert "ray local" in (out / "timing.json").read_text()

"""The experiments (`malv exp memory|sched|crossover`) and `malv bench mlaas`."""

from __future__ import annotations

import json
import os
import random

import pytest

from exp import crossover, memory, sched
from exp.output import results_dir
from image.cli import main as malv


def written(out) -> dict:
    files = set(os.listdir(out))
    assert {"results.json", "results.md"} <= files
    assert any(f.endswith(".png") for f in files)
    assert not [
        f for f in os.listdir(os.path.dirname(out)) if f.startswith(".")
    ]  # no temporary left
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


def test_belady_opt_is_never_beaten_by_a_demand_pager():
    rng = random.Random(0)
    for _ in range(30):
        refs = [rng.randrange(12) for _ in range(200)]
        frames = rng.randint(1, 8)
        opt = memory.belady_faults(refs, frames, set())
        lru = _lru(refs, frames)
        assert opt <= lru
        assert opt >= len(set(refs))  # every page faults at least once from empty
    assert memory.belady_faults([1, 2, 3, 1, 2, 3], 2, set()) == 4


def _lru(refs, frames):
    cache: list[int] = []
    faults = 0
    for p in refs:
        if p in cache:
            cache.remove(p)
        else:
            faults += 1
            if len(cache) >= frames:
                cache.pop(0)
        cache.append(p)
    return faults


@pytest.mark.slow  # a whole experiment
def test_the_memory_experiment_reports_hit_rates_and_the_gap_closed(tmp_path):
    out = tmp_path / "memory"
    assert (
        memory.main(
            ["--quick", "--accesses", "2000", "--frames", "32", "--out", str(out), "--quiet"]
        )
        == 0
    )
    results = written(out)
    for workload in memory.WORKLOADS:
        runs = results["workloads"][workload]["runs"]
        assert set(runs) == {*memory.POLICIES, "opt"}
        assert runs["lru"]["gap_closed"] in (0.0, None)
        for name in ("lru", "clock", "learned_warmth"):  # demand pagers cannot beat OPT
            assert runs[name]["faults"] >= runs["opt"]["faults"]
    assert "LRU→OPT gap closed" in (out / "results.md").read_text()


def test_the_sched_experiment_reports_mean_and_p99_completion(tmp_path):
    out = tmp_path / "sched"
    assert malv(["exp", "sched", "--quick", "--jobs", "150", "--out", str(out), "--quiet"]) == 0
    results = written(out)
    assert set(results["policies"]) == set(sched.POLICIES)
    for r in results["policies"].values():
        assert 0 < r["median_ms"] <= r["p99_ms"] and r["mean_ms"] > 0
    assert results["policies"]["srpt_oracle"]["mean_ms"] < results["policies"]["rr"]["mean_ms"]


def test_the_crossover_experiment_finds_where_the_vgpu_wins_and_the_policy_follows(tmp_path):
    out = tmp_path / "crossover"
    assert crossover.main(["--quick", "--out", str(out), "--quiet"]) == 0
    results = written(out)
    linnos, kml = results["models"]["linnos"], results["models"]["kml"]
    assert 1 < linnos["idle"]["crossover_rows"] < kml["idle"]["crossover_rows"] <= 1024
    assert linnos["idle"]["agreement"] == 1.0 and kml["idle"]["agreement"] == 1.0
    assert linnos["contended"]["stayed_on_cpu"] == 1.0
    assert linnos["idle"]["max_abs_error"] < 1e-4  # both sides computed the same outputs


def test_an_experiment_that_fails_leaves_no_half_written_results(tmp_path, monkeypatch):
    out = tmp_path / "sched"
    out.mkdir()
    (out / "results.md").write_text("an older run")

    def broken_plot(results, directory):
        raise RuntimeError("the plot failed")

    monkeypatch.setattr(sched, "plot", broken_plot)
    with pytest.raises(RuntimeError, match="the plot failed"):
        sched.main(["--quick", "--jobs", "20", "--out", str(out), "--quiet"])
    assert os.listdir(out) == ["results.md"] and (out / "results.md").read_text() == "an older run"
    assert os.listdir(tmp_path) == ["sched"]


def test_results_dir_replaces_an_older_run_only_when_complete(tmp_path):
    out = tmp_path / "r"
    with results_dir(str(out)) as d:
        open(os.path.join(d, "a"), "w").close()
    with results_dir(str(out)) as d:
        open(os.path.join(d, "b"), "w").close()
    assert os.listdir(out) == ["b"] and os.listdir(tmp_path) == ["r"]


def test_malv_exp_refuses_an_unknown_experiment(capsys):
    assert malv(["exp", "nope"]) == 2
    assert "unknown experiment 'nope'" in capsys.readouterr().err


def test_bench_mlaas_measures_dispatches_with_and_without_an_advisor():
    from bench.mlaas import switches_per_second

    assert switches_per_second(500, None) > 0
    assert switches_per_second(500, "noop") > 0

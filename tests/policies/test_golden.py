"""The sharing layer's seeded results stay byte-identical (golden.py records them).

Every policy's runs on the equivalence corpus, and the `--quick` stacking and
hybrid experiments, must reproduce what was recorded: the same atoms at the
same instants on the same masks, the same latencies, figures, traces and
energy.  A deliberate change re-records them (``python -m
tests.policies.golden --write``) and names the figures it changed.
"""

from __future__ import annotations

import functools
import json

import pytest

from tests.policies import golden

CORPUS = json.loads(golden.CORPUS.read_text())
CASES = golden.cases()


def test_the_corpus_is_the_recorded_one():
    assert sorted(CASES) == sorted(CORPUS), "re-record the corpus: its cases changed"


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_seeded_run_reproduces_its_golden_fingerprint(name):
    got = golden.fingerprint(*CASES[name]())
    want = CORPUS[name]
    differing = sorted(k for k in want if got.get(k) != want[k])
    assert not differing, f"{name}: {differing} changed (atoms {want['atoms']} -> {got['atoms']})"


#: Cases run again interpreted: the same source, step by step, must give the same bytes.
INTERPRETED = [
    "timeslice/stacking/0", "mig/hybrid/0", "tgs/stacking/1", "reef/hybrid/1", "orion/stacking/0",
    "lithos-both/hybrid/0", "mps->lithos/stacking/0", "priority/hybrid/0",
]  # fmt: skip


@pytest.mark.parametrize("name", INTERPRETED)
def test_the_loop_interpreted_reproduces_the_golden_fingerprint(name, monkeypatch):
    monkeypatch.setattr(golden, "simulate", functools.partial(golden.simulate, compiled=False))
    sim, result = golden.cases()[name]()
    assert sim.compiled is None, "the run should have been interpreted"
    got = golden.fingerprint(sim, result)
    differing = sorted(k for k in CORPUS[name] if got.get(k) != CORPUS[name][k])
    assert not differing, f"{name} interpreted: {differing} changed"


def _first_difference(want, got, path="results"):
    if isinstance(want, dict) and isinstance(got, dict):
        for key in sorted(set(want) | set(got)):
            if want.get(key) != got.get(key):
                return _first_difference(want.get(key), got.get(key), f"{path}.{key}")
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        for i, (a, b) in enumerate(zip(want, got, strict=True)):
            if a != b:
                return _first_difference(a, b, f"{path}[{i}]")
    return f"{path}: {want!r} -> {got!r}"


@pytest.mark.slow  # whole experiments, seeded
@pytest.mark.parametrize(("experiment", "seed"), golden.EXPERIMENTS)
def test_quick_experiment_reproduces_its_golden_results(experiment, seed, tmp_path):
    want = json.loads(golden.experiment_file(experiment, seed).read_text())
    got = golden.run_experiment(experiment, seed, tmp_path / "out")
    assert got["results"] == want["results"], _first_difference(want["results"], got["results"])
    assert got["trace_sha256"] == want["trace_sha256"], "trace.json changed"

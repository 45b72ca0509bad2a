"""`malv serve`: bad input and a missing LoadGen are one line on stderr, exit 2,
before anything boots."""

from __future__ import annotations

import sys

import pytest

from exp import loadgen
from exp.loadgen import ServeSettings, SettingsError
from image import cli


@pytest.fixture
def nothing_boots(monkeypatch):
    def boot(*_args, **_kwargs):
        raise AssertionError("a refused command must not boot")

    monkeypatch.setattr(loadgen.run, "ServingKernel", boot)


def test_a_missing_loadgen_is_one_line_saying_how_to_install_it(
    monkeypatch, capsys, nothing_boots, tmp_path
):
    monkeypatch.setitem(sys.modules, "mlperf_loadgen", None)  # import fails
    code = cli.main(["serve", "--loadgen", "Server", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "pip install mlcommons-loadgen" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--loadgen", "Cloud"], "invalid choice: 'Cloud'"),
        (["--loadgen", "Server", "--policy", "nosuch"], "no GPU advisor selects 'nosuch'"),
        (["--loadgen", "Server", "--compare", "mps,nosuch"], "no GPU advisor selects 'nosuch'"),
        (["--loadgen", "Server", "--model", "nosuch_model"], "unknown model 'nosuch_model'"),
        (["--loadgen", "Server", "--model", "/nonexistent.csv"], "cannot read"),
        (["--loadgen", "Server", "--colocate", "burn"], "neither gpu-burn nor train:MODEL"),
        (["--loadgen", "Server", "--colocate", "train:nosuch"], "unknown model 'nosuch'"),
        (["--loadgen", "Server", "--qps", "0"], "must be a positive finite number"),
        (["--loadgen", "Server", "--latency-percentile", "100"], "within (0, 100)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, nothing_boots):
    code = cli.main(["serve", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and message in err, err


def test_settings_name_what_they_refuse():
    with pytest.raises(SettingsError, match="scenario must be one of Server"):
        ServeSettings(scenario="Cloud")
    with pytest.raises(SettingsError, match="min_duration_s must be a positive number"):
        ServeSettings(min_duration_s=0)
    assert ServeSettings(policy="mps-limit").policy == "mps-limit"

"""Bad input at the `malv` command line: one clear line on stderr, exit 2.

The fuzz tests build random argument lists from each subcommand's own
option names and run `image.cli.main` on them.  Parsing and validation are
real; only the work behind them (an experiment's runs, a boot, a benchmark)
is replaced by raising `WouldRun`, so each example is fast.
"""

from __future__ import annotations

import argparse
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import busy
from exp import crossover, loadgen, memory, sched, sharing, sweep, vms
from exp.output import OneLineParser
from image import cli


class WouldRun(Exception):
    """Validation passed: the command would now do its work."""


def _would_run(*_args, **_kwargs):
    raise WouldRun


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """(exit code, stderr) of `malv ARGV`; code 0 when it would run."""
    try:
        code = cli.main(argv)
    except WouldRun:
        code = 0
    return code, capsys.readouterr().err


def one_line(err: str) -> bool:
    return err.endswith("\n") and err.count("\n") == 1 and "Traceback" not in err


# -- the cases the issue names ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["exp", "memory", "--accesses", "-5"], "argument --accesses: must be a positive integer"),
        (["exp", "memory", "--frames", "0"], "argument --frames: must be from 4 to"),
        (["exp", "memory", "--frames", "many"], "argument --frames: must be an integer"),
        (["exp", "sched", "--jobs", "0"], "argument --jobs: must be a positive integer"),
        (["exp", "stacking", "--arrival-speedup", "0"], "must be a positive finite number"),
        (["exp", "stacking", "--arrival-speedup", "-2.5"], "must be a positive finite number"),
        (["exp", "hybrid", "--duration", "inf"], "must be a positive finite number"),
        (["exp", "hybrid", "--duration", "1e9"], "more than a run can hold"),
        (["exp", "sweep", "--duration", "500"], "more than a run can hold"),
        (["exp", "dvfs", "--seeds", "0"], "argument --seeds: must be a positive integer"),
        (["exp", "rightsizing", "--jobs", "-1"], "argument --jobs: must be a positive integer"),
        (["exp", "crossover", "--seed", "x"], "argument --seed: must be an integer"),
        (["exp", "vms", "--out", ""], "argument --out: must name a directory"),
        (["boot", "--vms", "-1"], "argument --vms: must be 0 or more"),
        (["boot", "--cpus", "two"], "argument --cpus: must be an integer"),
    ],
)
def test_a_bad_option_value_is_one_line_and_exit_2(argv, message, capsys):
    code, err = run_cli(argv, capsys)
    assert code == 2
    assert one_line(err) and message in err


def test_ctrl_c_during_an_experiment_says_nothing_was_written(monkeypatch, capsys, tmp_path):
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(memory, "measure", interrupted)
    out = tmp_path / "results"
    code, err = run_cli(["exp", "memory", "--quick", "--out", str(out)], capsys)
    assert code == 130
    assert err == "malv exp memory: interrupted; nothing was written\n"
    assert list(tmp_path.iterdir()) == []  # not even a temporary directory is left


# -- fuzzing every subcommand ---------------------------------------------------------------------


def options_of(parser: argparse.ArgumentParser) -> list[tuple[str, bool, tuple | None]]:
    """(option, takes a value, its choices) for each option but --help."""
    found = []
    for action in parser._actions:
        for option in action.option_strings:
            if option not in ("-h", "--help"):
                found.append((option, action.nargs != 0, action.choices))
    return found


def exp_parser(name: str) -> argparse.ArgumentParser:
    """The option parser experiment `name` builds, caught as it parses."""
    caught: list[argparse.ArgumentParser] = []
    parse = OneLineParser.parse_args

    def catch(self, *args, **kwargs):
        if not self.prog.startswith("malv exp "):
            return parse(self, *args, **kwargs)  # malv's own parser
        caught.append(self)
        raise WouldRun

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(OneLineParser, "parse_args", catch)
        with pytest.raises(WouldRun):
            cli.main(["exp", name])
    return caught[0]


VALUES = st.one_of(
    st.integers(-3, 40).map(str),
    st.sampled_from(["0", "-1", "1", "0.5", "1e9", "nan", "inf", "-inf", "", " ", "x", "--", "-"]),
    st.text(alphabet="abc019-.,/ ", max_size=8),
)


@st.composite
def argv_for(draw, options: list[tuple[str, bool, tuple | None]]) -> list[str]:
    argv: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        option, takes_value, choices = draw(st.sampled_from(options))
        argv.append(option)
        if takes_value and draw(st.integers(0, 9)):  # now and then, the value is missing
            argv.append(draw(st.sampled_from(sorted(choices)) if choices else VALUES))
    if draw(st.booleans()):
        argv.append(draw(VALUES))  # a stray argument
    return argv


FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def nothing_runs(monkeypatch, tmp_path):
    """Every command's work raises WouldRun; relative paths land in tmp_path."""
    monkeypatch.chdir(tmp_path)
    for module, name in (
        (memory, "measure"), (sched, "measure"), (crossover, "measure"),
        (sharing.running, "run_jobs"), (vms, "run_mode"), (cli, "boot_headless"), (busy, "run"),
        (loadgen, "serve"), (loadgen, "compare"), (sweep, "run_local"), (sweep, "run_ray"),
    ):  # fmt: skip
        monkeypatch.setattr(module, name, _would_run)
    monkeypatch.setattr(cli, "importlib", _Importlib())


class _Importlib:
    """`importlib` for image.cli: experiments load, benchmarks would run."""

    def import_module(self, name: str) -> types.ModuleType:
        if name.startswith("bench."):
            return types.SimpleNamespace(run=_would_run)  # type: ignore[return-value]
        return __import__("importlib").import_module(name)


@pytest.mark.parametrize("name", cli.EXPERIMENTS)
def test_fuzzed_experiment_options_exit_0_or_2_with_one_line(name, nothing_runs, capsys):
    options = options_of(exp_parser(name))
    codes: set[int] = set()

    @FUZZ
    @given(argv=argv_for(options))
    def check(argv):
        code, err = run_cli(["exp", name, *argv], capsys)
        assert code in (0, 2), (argv, err)
        assert code == 0 or one_line(err), (argv, err)
        codes.add(code)

    check()
    assert codes == {0, 2}  # both accepted and refused argument lists were tried


@pytest.mark.parametrize("command", ["boot", "bench", "busy", "serve"])
def test_fuzzed_command_options_exit_0_or_2_with_one_line(command, nothing_runs, capsys):
    if command == "busy":
        options = [
            ("--burners", True, None),
            ("--stop-ms", True, None),
            ("--period-ms", True, None),
        ]
    else:
        sub = next(
            a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)
        )
        options = options_of(sub.choices[command])
    names = st.sampled_from(["ipc", "boot", "vgpu", "all", "nosuch", ""])
    codes: set[int] = set()

    @FUZZ
    @given(argv=argv_for(options), name=names, tail=st.sampled_from([[], ["--", "true"]]))
    def check(argv, name, tail):
        if command == "bench":
            argv = [name, *argv]
        elif command == "serve":
            argv = ["--loadgen", "Server", *argv]
        code, err = run_cli([command, *argv, *tail], capsys)
        assert code in (0, 2), (argv, err)
        assert code == 0 or one_line(err), (argv, err)
        codes.add(code)

    check()
    assert codes == {0, 2}  # both accepted and refused argument lists were tried

"""The `malv` command line without tracebacks (issue 23, item 5).

Each bad input named in the issue gets one line on stderr and an exit status
that says what happened: 2 for a refused input, 1 for failed commands, 124
for a --timeout, 130 for Ctrl-C.  Nothing is left behind on disk by a
refusal.  Ctrl-C is a real SIGINT, sent to a subprocess once it has printed
a line that says it is busy.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import busy
from exp import crossover, loadgen, memory, sched, sharing, sweep, vms
from exp.output import output_directory, results_dir
from image import cli

ROOT = Path(__file__).resolve().parents[1]
COURSE = str(ROOT / "image" / "course.toml")
EDGE = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class WorkStarted(Exception):
    """A command got past its checks and began its work."""


@pytest.fixture
def no_work(monkeypatch, tmp_path):
    """Every command's work raises WorkStarted; relative paths land in tmp_path."""
    monkeypatch.chdir(tmp_path)

    def started(*_args, **_kwargs):
        raise WorkStarted

    for module, name in (
        (memory, "measure"), (sched, "measure"), (crossover, "measure"),
        (sharing.running, "run_jobs"), (vms, "run_mode"), (cli, "boot_headless"),
        (busy, "run"), (loadgen, "serve"), (loadgen, "compare"), (sweep, "run_local"),
        (sweep, "run_ray"),
    ):  # fmt: skip
        monkeypatch.setattr(module, name, started)


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """(exit status, stderr) of `malv ARGV` in this process; 0 once work starts."""
    try:
        code = cli.main(argv)
    except WorkStarted:
        code = 0
    return code, capsys.readouterr().err


def malv(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "image.cli", *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def one_line(err: str) -> bool:
    return err.endswith("\n") and err.count("\n") == 1 and "Traceback" not in err


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -- malv build -o --------------------------------------------------------------------------------


def test_build_refuses_to_overwrite_a_file_that_is_not_an_image(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# mine\n")
    code, err = run_cli(["build", COURSE, "-o", str(readme)], capsys)
    assert code == 2
    assert err == (
        f"malv build: {readme} exists and is not a malvos image; "
        "not overwriting it (--force does)\n"
    )
    assert readme.read_text() == "# mine\n"
    assert entries(tmp_path) == ["README.md"]


def test_build_force_overwrites_and_an_earlier_image_is_replaced_unasked(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# mine\n")
    assert cli.main(["build", COURSE, "-o", str(readme), "--force"]) == 0
    assert "manifest.toml" in zipfile.ZipFile(readme).namelist()
    # now it is an image malv build wrote: building again needs no --force
    assert cli.main(["build", COURSE, "-o", str(readme)]) == 0
    assert entries(tmp_path) == ["README.md"]
    capsys.readouterr()


def test_build_without_o_guards_its_default_name_as_well(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "course.pyz").write_text("mine\n")  # the default NAME.pyz, not an image
    code, err = run_cli(["build", COURSE], capsys)
    assert code == 2
    assert err == (
        "malv build: course.pyz exists and is not a malvos image; not overwriting it (--force does)\n"
    )
    assert (tmp_path / "course.pyz").read_text() == "mine\n"
    assert cli.main(["build", COURSE, "--force"]) == 0
    assert cli.main(["build", COURSE]) == 0  # an image it wrote: replaced unasked
    assert "manifest.toml" in zipfile.ZipFile(tmp_path / "course.pyz").namelist()
    assert entries(tmp_path) == ["course.pyz"]
    capsys.readouterr()


def test_build_refuses_a_directory_and_leaves_nothing_behind(tmp_path, capsys):
    target = tmp_path / "adir"
    target.mkdir()
    for force in ([], ["--force"]):
        code, err = run_cli(["build", COURSE, "-o", str(target), *force], capsys)
        assert code == 2
        assert (
            err
            == f"malv build: {target} is a directory; name the image file, e.g. {target}/NAME.pyz\n"
        )
    assert entries(tmp_path) == ["adir"]  # no adir.tmp
    assert entries(target) == []


@pytest.mark.parametrize("where", ["/proc/x.pyz", "README.md/x.pyz"])
def test_build_refuses_an_unwritable_target_with_one_line(where, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "README.md").write_text("a file, not a directory\n")
    code, err = run_cli(["build", COURSE, "-o", where], capsys)
    assert code == 2
    assert one_line(err) and err.startswith(
        f"malv build: cannot write {where}: no file can be made in"
    )
    assert entries(tmp_path) == ["README.md"]


def test_an_interrupted_build_leaves_no_temporary_file(tmp_path, monkeypatch, capsys):
    from image import builder

    real_zipfile = zipfile.ZipFile

    def interrupted_after_writing(path, *args, **kwargs):
        archive = real_zipfile(path, *args, **kwargs)
        if str(path).endswith(".tmp"):
            archive.close()
            raise KeyboardInterrupt
        return archive

    monkeypatch.setattr(builder.zipfile, "ZipFile", interrupted_after_writing)
    code, err = run_cli(["build", COURSE, "-o", str(tmp_path / "c.pyz")], capsys)
    assert (code, err) == (130, "malv build: interrupted\n")
    assert entries(tmp_path) == []


# -- --out: refused before any work ----------------------------------------------------------------


EXPERIMENTS_AND_SERVE = [["exp", name] for name in cli.EXPERIMENTS] + [
    ["serve", "--loadgen", "Server"]
]


@pytest.mark.parametrize("command", EXPERIMENTS_AND_SERVE, ids=" ".join)
@pytest.mark.parametrize("out", ["/proc/x", "README.md/x", ".", "..", "/", "README.md"])
def test_a_bad_out_is_refused_before_any_work(command, out, no_work, tmp_path, capsys):
    (tmp_path / "README.md").write_text("a file\n")
    code, err = run_cli([*command, "--out", out], capsys)
    assert code == 2, err
    prog = " ".join(["malv", *command[:2]]) if command[0] == "exp" else "malv serve"
    assert one_line(err) and err.startswith(f"{prog}: argument --out: "), err
    assert entries(tmp_path) == ["README.md"]


def test_out_messages_say_why():
    cases = {
        "/proc/x": "cannot write '/proc/x': no directory can be made in /proc",
        ".": "'.' holds the current directory, which a run would replace",
        "": "must name a directory, got ''",
        "x" * 241: "is too long",
    }
    for out, why in cases.items():
        with pytest.raises(Exception, match=why.replace("(", r"\(").replace(".", r"\.")):
            output_directory(out)


PATH_PARTS = st.sampled_from(["a", "b c", ".", "..", "", "-", "x" * 250, "\0", "README.md", "~"])


@EDGE
@given(parts=st.lists(PATH_PARTS, min_size=1, max_size=4), absolute=st.booleans())
def test_any_out_is_accepted_or_refused_with_one_line_and_nothing_left(
    parts, absolute, tmp_path_factory, capsys
):
    base = tmp_path_factory.mktemp("out")
    (base / "README.md").write_text("a file\n")
    text = (f"{base}/" if absolute else "") + "/".join(parts)
    before = os.getcwd()
    os.chdir(base)
    try:
        code, err = run_cli(["exp", "sched", "--out", text, "--jobs", "x"], capsys)
    finally:
        os.chdir(before)
    assert code == 2 and one_line(err)  # refused: the --out, or else --jobs x after it
    if "argument --jobs" in err:  # --out was accepted: its check wrote nothing
        abspath = os.path.abspath(os.path.join(base, text))
        assert os.path.commonpath([abspath, str(base)]) != abspath
    assert entries(base) == ["README.md"]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_results_directories_follow_the_umask(umask, tmp_path):
    old = os.umask(umask)
    try:
        with results_dir(str(tmp_path / "results" / "x")) as tmp:
            Path(tmp, "results.json").write_text("{}\n")
    finally:
        os.umask(old)
    assert (tmp_path / "results" / "x").stat().st_mode & 0o777 == 0o777 & ~umask


# -- seeds ---------------------------------------------------------------------------------------


SEEDED = [["boot", "--headless", "--run", "ps"], ["serve", "--loadgen", "Server"]] + [
    # `exp sweep` takes about a second a seed before its work starts
    pytest.param(["exp", name], marks=[pytest.mark.slow] * (name == "sweep"))
    for name in cli.EXPERIMENTS
]


@pytest.mark.parametrize("command", SEEDED, ids=" ".join)
def test_seeds_are_zero_or_more_everywhere(command, no_work, capsys):
    @EDGE
    @given(value=st.integers(-(2**70), 2**70))
    def check(value):
        code, err = run_cli([*command, "--seed", str(value)], capsys)
        if value < 0:
            assert code == 2 and one_line(err), err
            assert f"argument --seed: a seed must be 0 or more, got '{value}'" in err
        else:
            assert "--seed" not in err

    check()


# -- malv boot --headless: --timeout, --strict, failed commands ------------------------------------


@EDGE
@given(value=st.sampled_from(["0", "-1", "-0.5", "nan", "inf", "-inf", "", "x", "1e400"]))
def test_timeout_must_be_a_positive_finite_number(value, no_work, capsys):
    code, err = run_cli(["boot", "--headless", f"--timeout={value}", "--run", "ps"], capsys)
    assert code == 2 and one_line(err)
    assert "argument --timeout: must be a" in err


@pytest.mark.parametrize("option", [["--timeout", "5"], ["--strict"]])
def test_timeout_and_strict_are_refused_without_headless(option, no_work, capsys):
    code, err = run_cli(["boot", *option], capsys)
    assert (code, err) == (
        2,
        "malv boot: --timeout and --strict are for headless boots (--headless)\n",
    )


def test_a_command_that_never_ends_is_stopped_by_timeout():
    r = malv("boot", "--headless", "--timeout", "1", "--run", "run spin; poweroff")
    assert r.returncode == 124
    assert r.stderr == "malv boot: timed out (--timeout); the commands had not finished\n"
    assert "powering off" not in r.stdout


def test_failed_commands_make_the_exit_status_1_and_are_named(capsys):
    code = cli.main(["boot", "--headless", "--run", "run nosuch; frob; ps; kill x"])
    out, err = capsys.readouterr()
    assert code == 1
    assert err == "malv boot: 3 commands failed: run nosuch; frob; kill x\n"
    assert "init" in out  # ps ran: without --strict every command runs


def test_a_program_that_exits_non_zero_is_a_failed_command(capsys):
    code = cli.main(["boot", "--headless", "--run", "run spin -5"])
    assert code == 1
    assert capsys.readouterr().err == "malv boot: 1 command failed: run spin -5\n"


def test_commands_that_all_succeed_exit_0(capsys):
    assert cli.main(["boot", "--headless", "--run", "ps; run echo hi; poweroff"]) == 0
    assert capsys.readouterr().err == ""


def test_strict_stops_at_the_first_failed_command(capsys):
    code = cli.main(["boot", "--headless", "--strict", "--run", "run echo one; frob; run echo two"])
    out, err = capsys.readouterr()
    assert code == 1
    assert err == "malv boot: stopped at a failed command (--strict): frob\n"
    assert "one" in out and "two" not in out
    assert "sh: stopping at a failed command (set -e): frob" in out


def test_set_e_is_a_shell_builtin(malv_kernel):
    assert malv_kernel.shell("set -x") == "set: usage: set -e | set +e\n"
    assert malv_kernel.shell("set +e; frob; run echo after").endswith("after\n")


# -- Ctrl-C ---------------------------------------------------------------------------------------


def interrupted(argv: list[str], ready: str) -> subprocess.CompletedProcess:
    """Run `argv` (a Python command line), wait for a stdout line starting with
    `ready`, send SIGINT to its process group, as a terminal's Ctrl-C does, and
    collect what is left."""
    p = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
    )  # fmt: skip
    assert p.stdout is not None
    for line in p.stdout:
        if line.startswith(ready):
            break
    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=120)
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


def test_ctrl_c_during_a_headless_boot_is_one_line_and_130():
    r = interrupted(
        [sys.executable, "-m", "image.cli", "boot", "--headless", "--run", "run spin"], "$ run spin"
    )
    assert (r.returncode, r.stderr) == (130, "malv boot: interrupted\n")


def test_ctrl_c_during_an_image_boot_is_one_line_and_130(tmp_path):
    image = tmp_path / "course.pyz"
    assert cli.main(["build", COURSE, "-o", str(image)]) == 0
    r = interrupted(
        [sys.executable, "-m", "image.cli", "boot", str(image), "--headless", "--run", "run spin"],
        "$ run spin",
    )
    assert (r.returncode, r.stderr) == (130, "malvos: interrupted\n")


#: A benchmark that is busy until interrupted, with the mlaas guard's Ctrl-C
#: handler installed as a loaded module installs it (it raises HostInterrupt).
ENDLESS_BENCH = textwrap.dedent(
    """
    import sys, threading, types
    from image import cli
    from kernel.mlaas.faults import install_host_interrupt

    def run(quick=False):
        install_host_interrupt()
        threading.Event().wait()
        return []

    sys.modules["bench.endless"] = types.SimpleNamespace(run=run)
    cli.BENCHMARKS = ("endless",)
    sys.exit(cli.main(["bench", "endless"]))
    """
)


def test_ctrl_c_during_a_benchmark_is_one_line_and_130():
    r = interrupted([sys.executable, "-c", ENDLESS_BENCH], "== endless")
    assert (r.returncode, r.stderr) == (130, "malv bench: interrupted\n")


# -- missing optional packages ----------------------------------------------------------------------


def test_an_interactive_boot_without_prompt_toolkit_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "prompt_toolkit", None)
    monkeypatch.delitem(sys.modules, "image.terminal", raising=False)
    monkeypatch.setattr(sys, "stdin", type("Tty", (), {"isatty": lambda self: True})())
    code, err = run_cli(["boot"], capsys)
    assert code == 2
    assert err == (
        "malv: the interactive terminal needs prompt_toolkit, which is not installed: "
        "pip install prompt_toolkit\n"
    )


def test_a_gpu_image_without_numba_says_how_to_install_it(tmp_path):
    image = tmp_path / "research.pyz"
    assert cli.main(["build", str(ROOT / "image" / "research.toml"), "-o", str(image)]) == 0
    boot = textwrap.dedent(
        f"""
        import runpy, sys
        sys.modules["numba"] = None
        sys.argv = [{str(image)!r}, "--headless", "--run", "poweroff"]
        runpy.run_path({str(image)!r}, run_name="__main__")
        """
    )
    r = subprocess.run([sys.executable, "-c", boot], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr == "malvos: the vGPU needs numba, which is not installed: pip install numba\n"


def test_serve_without_loadgen_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlperf_loadgen", None)
    code, err = run_cli(["serve", "--loadgen", "Server", "--out", "results/x"], capsys)
    assert code == 2
    assert err == "malv serve: MLPerf LoadGen is not installed: pip install mlcommons-loadgen\n"


def test_a_sweep_on_ray_without_ray_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["exp", "sweep", "--quick", "--quiet", "--ray"], capsys)
    assert code == 2
    assert err == "malv exp: --ray needs Ray: python3 -m pip install -e '.[ray]'\n"

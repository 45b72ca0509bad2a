"""`malv lab`: the labs in image/lab_files, started and graded as a student would.

Every lab's starter fails its grader and its reference solution (kept here,
in tests/labs_solutions, never shipped) passes it with full marks, through
`malv lab start` and `malv lab grade` in a fresh directory.  Bad input is
one line on stderr and exit status 2.  A student's code that games the
grader earns what its real work earns; one that hangs is graded anyway.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from image import labs
from image.cli import main

LABS = ("sched", "memory", "ipc")
SOLUTIONS = Path(__file__).parent / "labs_solutions"


def solution(lab: labs.Lab) -> Path:
    return SOLUTIONS / lab.name / lab.starter


def score(out: str, lab: str) -> tuple[int, int]:
    m = re.search(rf"^lab {lab}: (\d+)/(\d+)$", out, re.M)
    assert m, out
    return int(m[1]), int(m[2])


def test_list_shows_each_lab_on_one_line(capsys):
    assert main(["lab", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == sorted(LABS)
    assert all(len(line.split()) > 3 for line in lines), lines  # a name and a summary


@pytest.mark.parametrize("lab", labs.list_labs(), ids=lambda lab: lab.name)
def test_each_lab_has_a_readme_a_starter_a_grader_and_a_solution(lab):
    assert lab.grader.is_file() and solution(lab).is_file()
    assert solution(lab).read_text() != (lab.directory / lab.starter).read_text()
    assert not any(p.name == "solution" for p in lab.directory.iterdir())  # not shipped
    assert "## How it is graded" in (lab.directory / "README.md").read_text()


#: The labs whose full grading runs in the fast tier; the others are slow (CI runs them).
QUICK_LABS = ("sched",)


@pytest.mark.parametrize(
    "lab", [lab if lab in QUICK_LABS else pytest.param(lab, marks=pytest.mark.slow) for lab in LABS]
)
def test_the_starter_fails_and_the_solution_gets_full_marks(lab, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["lab", "start", lab]) == 0
    started = sorted(p.name for p in tmp_path.iterdir())
    starter = labs.find_lab(lab).starter
    assert started == sorted([starter, f"README-{lab}.md"])  # the solution stays behind
    capsys.readouterr()

    assert main(["lab", "grade", lab]) == 1
    out = capsys.readouterr().out
    earned, total = score(out, lab)
    assert total == 100 and earned < total
    assert re.search(r"\.\.\. FAILED +0/\d+$", out, re.M)

    shutil.copyfile(solution(labs.find_lab(lab)), tmp_path / starter)
    assert main(["lab", "grade", lab]) == 0
    out = capsys.readouterr().out
    assert score(out, lab) == (100, 100)
    assert "FAILED" not in out and "ERROR" not in out


def test_start_refuses_to_overwrite_a_students_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bank.py").write_text("# my work\n")
    assert main(["lab", "start", "ipc"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not overwriting" in err
    assert (tmp_path / "bank.py").read_text() == "# my work\n"
    assert not (tmp_path / "README-ipc.md").exists()  # nothing copied at all


@pytest.mark.parametrize(
    "args",
    [
        ["lab", "start", "nosuch"],
        ["lab", "grade", "nosuch"],
        ["lab", "grade", "sched", "{empty}"],
        ["lab"],
        ["lab", "frobnicate"],
        ["lab", "start"],
        ["lab", "grade"],
        ["lab", "list", "extra"],
    ],
    ids=lambda args: " ".join(args),
)
def test_bad_input_is_one_line_and_exit_status_2(args, tmp_path, capsys):
    args = [a.replace("{empty}", str(tmp_path)) for a in args]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("malv lab: "), err


def test_a_grade_counts_only_the_cases_that_passed():
    grade = labs.Grade(
        "demo",
        Path("demo.py"),
        (
            labs.Case("it loads", 10, "passed"),
            labs.Case("it is fast", 50, "failed", "3 ms, needs 2"),
            labs.Case("it is skipped", 40, "skipped", "skipped"),
        ),
    )
    assert (grade.score, grade.total, grade.passed) == (10, 100, False)
    text = labs.format_grade(grade)
    assert re.search(r"^it loads \.+ OK +10/10$", text, re.M)
    assert re.search(r"^it is fast \.+ FAILED +0/50\n    3 ms, needs 2$", text, re.M)
    assert text.endswith("lab demo: 10/100\n")


# -- a student's code cannot game the grade ------------------------------------------------------

#: The sched starter, and a cheat run at its top level.  What it deserves is
#: the starter's score (it loads, and round robin finishes every job), or 0
#: for the cheat that writes garbage into its own pipe to the kernel.
STARTER_SCORE = 30
DESERVED = {"writes_a_forged_report_to_every_descriptor": 0}
CHEATS = {
    "atexit_rewrites_the_report": """
import atexit, json, os
def forge():
    for name, value in os.environ.items():
        if name.startswith("MALV_LAB"):
            with open(value, "w") as f:
                json.dump([{"title": "all", "points": 100, "outcome": "passed"}], f)
atexit.register(forge)
""",
    "writes_a_forged_report_to_every_descriptor": """
import json, os
for fd in range(3, 64):
    for record in (["collected", [["all", 100]]], ["case", 0, "passed", ""]):
        try:
            os.write(fd, (json.dumps(record) + "\\n").encode())
        except OSError:
            pass
""",
    "monkey_patches_the_grader": """
import sys
for module in list(sys.modules.values()):
    for name in ("improvement", "student_run", "pytest_runtest_logreport", "verdict"):
        if hasattr(module, name):
            setattr(module, name, lambda *a, **k: 1.0)
import image.labs
image.labs.Case.earned = property(lambda self: self.points)
""",
    "runs_the_reference_solution": f"""
import pathlib
for path in (pathlib.Path({str(SOLUTIONS)!r}) / "sched" / "my_sched.py",):
    try:
        exec(compile(path.read_text(), str(path), "exec"))
    except OSError:
        pass
""",
}


@pytest.mark.parametrize("cheat", CHEATS, ids=str)
def test_a_module_that_games_the_grader_earns_only_its_real_score(cheat, tmp_path):
    assert (SOLUTIONS / "sched" / "my_sched.py").is_file()  # there to be read, but not by it
    starter = labs.find_lab("sched").directory / "my_sched.py"
    # A cheat that fails fails quietly: the module still loads, and earns the starter's score.
    attempt = (
        "\ntry:\n" + textwrap.indent(CHEATS[cheat], "    ") + "except BaseException:\n    pass\n"
    )
    (tmp_path / "my_sched.py").write_text(starter.read_text() + attempt)
    grade = labs.grade("sched", tmp_path)
    deserved = DESERVED.get(cheat, STARTER_SCORE)
    assert (grade.score, grade.total) == (deserved, 100), labs.format_grade(grade)
    assert not (tmp_path / "report.json").exists()


def test_a_module_whose_top_level_hangs_is_graded_with_a_line_a_student_understands(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(labs, "LOAD_LIMIT_S", 1.0)
    (tmp_path / "my_sched.py").write_text("while True:\n    pass\n")
    lines: list[str] = []
    grade = labs.grade("sched", tmp_path, lines.append)
    assert grade.score == 0 and grade.total == 100
    assert len(lines) == len(grade.cases)  # one line per test, as each was graded
    why = "my_sched.py did not finish loading within 1 s: does its top level loop forever"
    assert all(c.outcome == "failed" and c.message.startswith(why) for c in grade.cases), lines
    assert not re.search(r"\b\w+_\w+\(|Error\b|Traceback", "\n".join(lines)), lines


@pytest.mark.slow  # grades the whole lab, waiting out each hang
def test_a_bank_that_hangs_between_traps_is_stopped_and_graded(tmp_path, monkeypatch):
    monkeypatch.setattr(labs, "STEP_LIMIT_S", 0.5)
    (tmp_path / "bank.py").write_text(
        "from kernel.traps import NewEndpoint\n"
        "def bank(proc):\n"
        "    yield NewEndpoint()\n"
        "    while True:\n"
        "        pass\n"
    )
    grade = labs.grade("ipc", tmp_path)
    assert grade.score == 0, labs.format_grade(grade)
    assert any("does bank.py loop forever" in c.message for c in grade.cases), labs.format_grade(
        grade
    )


def test_ctrl_c_while_grading_is_one_line_and_exit_status_130(tmp_path):
    starter = labs.find_lab("sched").directory / "my_sched.py"
    (tmp_path / "my_sched.py").write_text(starter.read_text())
    root = Path(labs.__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    child = subprocess.Popen(
        [sys.executable, "-m", "image.cli", "lab", "grade", "sched"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout.readline().startswith("== lab sched: grading")  # the grader runs
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 130
    assert err == "malv lab: interrupted; nothing was graded\n", err


def test_the_course_image_carries_the_labs(tmp_path):
    from image.builder import build

    image = build("course", tmp_path / "course.pyz")
    work = tmp_path / "student"
    work.mkdir()

    def run(*args):
        return subprocess.run(
            [sys.executable, str(image), "lab", *args], cwd=work, capture_output=True,
            text=True, timeout=120, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    listed = run("list")
    assert listed.returncode == 0 and "sched" in listed.stdout.split()
    started = run("start", "sched")
    assert started.returncode == 0, started.stderr
    assert sorted(p.name for p in work.iterdir()) == ["README-sched.md", "my_sched.py"]
    graded = run("grade", "sched")  # an image cannot run the sandboxes: it says what can
    assert graded.returncode == 2 and graded.stderr.count("\n") == 1
    assert "pip install malvos" in graded.stderr and graded.stdout == ""


# -- the wire between a sandboxed program and the grader's kernel ------------------------------

payloads = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8)
    | st.floats(allow_nan=False),
    lambda inner: st.tuples(inner, inner) | st.lists(inner, max_size=3).map(tuple),
    max_leaves=12,
)  # fmt: skip


@given(label=st.text(max_size=8), payload=payloads, badge=st.integers(0, 2**31))
def test_messages_and_received_messages_cross_the_wire_unchanged(label, payload, badge):
    from kernel.mlaas.child import FrameReader, encode
    from kernel.traps import Message, Received

    msg = Message(label, payload)
    reader = FrameReader()
    reader.feed(encode(labs._wire(Received(msg, badge, 3))))
    back = labs._unwire(reader.next())
    assert (back.msg, back.badge, back.reply) == (msg, badge, 3)


plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    name=st.sampled_from([*labs.PROGRAM_TRAPS, "ModLoad", "Poweroff", "MapDevice"])
    | st.text(max_size=10),
    fields=plain,
)
def test_a_hostile_program_trap_is_refused_or_built_never_anything_else(name, fields):
    try:
        trap = labs._trap_in(name, fields)
    except labs.ProgramFailed:
        return
    assert trap is None or type(trap).__name__ in labs.PROGRAM_TRAPS
    if name not in labs.PROGRAM_TRAPS:
        assert trap is None


def test_a_module_that_does_not_import_fails_every_test_with_one_plain_line(tmp_path):
    (tmp_path / "my_sched.py").write_text("import no_such_module\n")
    grade = labs.grade("sched", tmp_path)
    assert grade.score == 0
    messages = {c.message for c in grade.cases}
    assert len(messages) == 1, messages
    (message,) = messages
    assert message.startswith("my_sched.py does not load: its top level raised ModuleNotFoundError")
    assert "exec_module" not in message and "EMODULE" not in message


@pytest.mark.slow  # grades the whole lab, each case up to the trap count
def test_a_bank_that_loops_over_traps_forever_is_stopped_by_a_trap_count(tmp_path):
    (tmp_path / "bank.py").write_text(
        "from kernel.traps import Yield\ndef bank(proc):\n    while True:\n        yield Yield()\n"
    )
    grade = labs.grade("ipc", tmp_path)
    assert grade.score == 0, labs.format_grade(grade)
    stopped = f"bank.py made {labs.MAX_PROGRAM_TRAPS} traps: does it loop forever?"
    assert any(stopped in c.message for c in grade.cases), labs.format_grade(grade)


def test_a_grade_that_runs_past_its_limit_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(labs, "GRADE_LIMIT_S", 0.01)
    (tmp_path / "my_sched.py").write_text("")
    with pytest.raises(labs.LabError, match=r"^the grade ran past 0.01 s"):
        labs.grade("sched", tmp_path)


fragments = st.sampled_from([
    "import os\n", "raise SystemExit(3)\n", "import atexit; atexit.register(print)\n",
    "x = 1 / 0\n", "open('forged', 'w')\n", "class C:\n    pass\n", "def f(:\n", "\x00",
    "from kernel.mlaas import SchedAdvisor\nclass S(SchedAdvisor):\n    name = 's'\n",
])  # fmt: skip


@settings(max_examples=6, deadline=None)
@given(source=st.lists(fragments | st.text(max_size=20), max_size=4).map("".join))
def test_any_file_either_loads_or_is_refused_in_one_line_a_student_reads(source, tmp_path_factory):
    path = tmp_path_factory.mktemp("student") / "my_sched.py"
    path.write_text(source, errors="surrogateescape")
    why = labs.advisor_loads(path)
    if why is not None:
        assert why.startswith("my_sched.py "), why
        assert "\n" not in why and "exec_module" not in why and "EMODULE" not in why, why
    assert not (path.parent / "forged").exists()

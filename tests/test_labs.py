"""`malv lab`: the labs in docs/labs, started and graded as a student would.

Every lab's starter fails its grader and its reference solution passes it
with full marks, through `malv lab start` and `malv lab grade` in a fresh
directory.  Bad input is one line on stderr and exit status 2.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from image import labs
from image.cli import main

LABS = ("sched", "memory", "ipc")


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
    assert lab.grader.is_file() and lab.solution.is_file()
    assert lab.solution.read_text() != (lab.directory / lab.starter).read_text()
    assert "## How it is graded" in (lab.directory / "README.md").read_text()


@pytest.mark.parametrize("lab", LABS)
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

    shutil.copyfile(labs.find_lab(lab).solution, tmp_path / starter)
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

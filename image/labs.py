"""`malv lab`: graded labs for OS courses, in the manner of xv6's `make grade`.

A lab is a directory of `docs/labs/`:

* ``README.md``   — the goal, what to implement, how it is graded, hints;
                    its first line is ``# Lab NAME: one-line summary``;
* the starter     — the one other ``*.py`` file: what the student edits;
* ``grade_NAME.py`` — the grader, a pytest file whose tests carry points
                    (``@pytest.mark.points(20)``) and take the student's file
                    from the `lab_file` fixture;
* ``solution/``   — the reference solution, never copied to a student.

`start` copies the starter and the README into a directory; `grade` runs the
grader in a child pytest (so a student's code cannot take the CLI down with
it) and reads back one result per test.  This module is also the pytest
plugin the child loads (``-p image.labs``): the `points` marker, the
`lab_file` fixture, and the report it writes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent
LABS_DIR = ROOT / "docs" / "labs"
FILE_ENV = "MALV_LAB_FILE"  # the student's file, for the grader
REPORT_ENV = "MALV_LAB_REPORT"  # where the grader's plugin writes its results
GRADER_TIMEOUT_S = 300  # host seconds: a grade takes a few; only a hung student's file takes this


class LabError(ValueError):
    """Bad input to `malv lab`: the message is the one line the user sees."""


@attrs.frozen
class Lab:
    name: str
    directory: Path
    summary: str
    starter: str  # the file name the student edits

    @property
    def grader(self) -> Path:
        return self.directory / f"grade_{self.name}.py"

    @property
    def solution(self) -> Path:
        return self.directory / "solution" / self.starter

    @property
    def readme_copy(self) -> str:
        """The README's name in a student's directory (labs may share one)."""
        return f"README-{self.name}.md"


@attrs.frozen
class Case:
    """One graded test: its title, its points, and how it went."""

    title: str
    points: int
    outcome: str  # "passed", "failed", "error" or "skipped"
    message: str = ""

    @property
    def earned(self) -> int:
        return self.points if self.outcome == "passed" else 0


@attrs.frozen
class Grade:
    lab: str
    file: Path
    cases: tuple[Case, ...]

    @property
    def score(self) -> int:
        return sum(c.earned for c in self.cases)

    @property
    def total(self) -> int:
        return sum(c.points for c in self.cases)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and self.score == self.total


# -- the labs ---------------------------------------------------------------------------


def _load(directory: Path) -> Lab:
    title = (directory / "README.md").read_text().splitlines()[0]
    summary = title.split(":", 1)[1].strip() if ":" in title else title.lstrip("# ")
    starters = [
        p.name for p in directory.glob("*.py") if not p.name.startswith(("grade_", "conftest"))
    ]
    if len(starters) != 1:
        raise LabError(f"lab {directory.name}: expected one starter file, found {starters}")
    return Lab(directory.name, directory, summary, starters[0])


def list_labs() -> list[Lab]:
    return [_load(d) for d in sorted(LABS_DIR.iterdir()) if (d / "README.md").is_file()]


def find_lab(name: str) -> Lab:
    labs = {lab.name: lab for lab in list_labs()}
    if name not in labs:
        raise LabError(f"no lab named {name!r}; choose from {', '.join(labs)}")
    return labs[name]


def start(name: str, directory: Path) -> list[Path]:
    """Copy the lab's starter and README into `directory`; refuse to overwrite."""
    lab = find_lab(name)
    copies = {
        lab.directory / lab.starter: directory / lab.starter,
        lab.directory / "README.md": directory / lab.readme_copy,
    }
    for target in copies.values():
        if target.exists():
            raise LabError(f"{target} exists already; not overwriting it")
    for source, target in copies.items():
        shutil.copyfile(source, target)
    return list(copies.values())


def student_file(lab: Lab, where: Path) -> Path:
    """The student's file: `where` itself, or the starter's name in it."""
    path = where if where.is_file() else where / lab.starter
    if not path.is_file():
        raise LabError(f"no {lab.starter} in {where} (run `malv lab start {lab.name}` first)")
    return path.resolve()


# -- grading ---------------------------------------------------------------------------------


def grade(name: str, where: Path) -> Grade:
    """Run lab `name`'s grader on the student's file at `where` (a file or a directory)."""
    lab = find_lab(name)
    path = student_file(lab, where)
    with tempfile.TemporaryDirectory(prefix="malv-lab-") as tmp:
        report = Path(tmp) / "report.json"
        try:
            child = _run_grader(lab, path, report)
        except subprocess.TimeoutExpired:
            raise LabError(
                f"the {name} grader ran past {GRADER_TIMEOUT_S} s: does {path.name} hang?"
            ) from None
        if not report.is_file():
            tail = (child.stdout + child.stderr).strip().splitlines()[-5:]
            raise LabError(f"the {name} grader did not run: {' / '.join(tail)}")
        cases = tuple(Case(**c) for c in json.loads(report.read_text()))
    if not cases:
        raise LabError(f"the {name} grader collected no tests")
    return Grade(name, path, cases)


def _run_grader(lab: Lab, path: Path, report: Path) -> subprocess.CompletedProcess:
    # The child imports this tree's malvos, whatever else is installed.
    pythonpath = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    env = {
        **os.environ,
        FILE_ENV: str(path),
        REPORT_ENV: str(report),
        "PYTHONPATH": pythonpath,
        "PYTHONDONTWRITEBYTECODE": "1",  # nothing written into docs/labs or the student's dir
    }
    command = [sys.executable, "-m", "pytest", str(lab.grader), "-q", "-p", "image.labs"]
    command += ["-p", "no:cacheprovider", "--rootdir", str(lab.directory), "-c", os.devnull]
    return subprocess.run(
        command, cwd=path.parent, env=env, capture_output=True, text=True, timeout=GRADER_TIMEOUT_S
    )


def format_grade(g: Grade) -> str:
    """A per-test breakdown and the score, as xv6's grade scripts print them."""
    width = max(len(c.title) for c in g.cases) + 4
    lines = [f"== lab {g.lab}: grading {g.file}"]
    for c in g.cases:
        verdict = "OK" if c.outcome == "passed" else c.outcome.upper()
        lines.append(
            f"{c.title} {'.' * (width - len(c.title))} {verdict:<6} {c.earned:>3}/{c.points}"
        )
        if c.message:
            lines.append(f"    {c.message}")
    lines.append(f"lab {g.lab}: {g.score}/{g.total}")
    return "\n".join(lines) + "\n"


# -- the CLI -----------------------------------------------------------------------------------


def main(action: str | None, name: str | None, where: str | None) -> int:
    """`malv lab list|start NAME|grade NAME [DIR]`: 0 all passed, 1 not, 2 bad input."""
    try:
        return _dispatch(action, name, where)
    except LabError as exc:
        print(f"malv lab: {exc}", file=sys.stderr)
        return 2


def _dispatch(action: str | None, name: str | None, where: str | None) -> int:
    if action == "list" and name is None:
        for lab in list_labs():
            print(f"{lab.name:<8} {lab.summary}")
        return 0
    if action == "start" and name is not None and where is None:
        for path in start(name, Path.cwd()):
            print(f"wrote {path.name}")
        return 0
    if action == "grade" and name is not None:
        g = grade(name, Path(where) if where else Path.cwd())
        print(format_grade(g), end="")
        return 0 if g.passed else 1
    raise LabError("usage: malv lab list | start NAME | grade NAME [DIR]")


# -- the pytest plugin the grader runs under ------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "points(n): what a grader's test is worth")


@pytest.fixture
def lab_file() -> Path:
    """The student's file being graded."""
    path = os.environ.get(FILE_ENV)
    if not path:
        pytest.fail(f"{FILE_ENV} is not set: run graders with `malv lab grade`")
    return Path(path)


_CASES: dict[str, dict[str, Any]] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        marker = item.get_closest_marker("points")
        doc = getattr(getattr(item, "function", None), "__doc__", None) or item.name
        _CASES[item.nodeid] = {
            "title": doc.strip().splitlines()[0].rstrip("."),
            "points": int(marker.args[0]) if marker else 0,
            "outcome": "passed",
            "message": "",
        }


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    case = _CASES.get(report.nodeid)
    if case is None or case["outcome"] != "passed" or report.passed:
        return
    if report.skipped:  # a skipped test earns nothing
        case["outcome"], case["message"] = "skipped", "skipped"
        return
    case["outcome"] = "failed" if report.when == "call" else "error"
    case["message"] = _first_line(report)


def _first_line(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    line = next(iter(text.strip().splitlines()), "")
    return line.removeprefix("AssertionError: ").removeprefix("Failed: ")


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get(REPORT_ENV)
    if path:
        Path(path).write_text(json.dumps(list(_CASES.values())))

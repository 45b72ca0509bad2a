"""docs/recipes/lab.md, walked through: a new lab is a README, a starter and a grader in
`image/lab_files/NAME/`, and a reference solution; `malv lab` lists, starts and grades it.

The test copies the `image` package to a temporary directory, writes there the four files the
recipe shows (read from the recipe's page, so the page is what is tested), and runs
`malv lab` from the copy: the starter fails, the solution gets full marks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPE = (ROOT / "docs/recipes/lab.md").read_text()


def recipe_files() -> dict[str, str]:
    """The files the recipe shows: each block under a bold path."""
    return dict(re.findall(r"\*\*`([^`]+)`\*\*\n\n```\w*\n(.*?)```", RECIPE, re.S))


def malv(cwd: Path, tree: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{ROOT}"}
    return subprocess.run(
        [sys.executable, "-m", "image.cli", "lab", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_recipe_shows_four_files():
    assert sorted(recipe_files()) == [
        "image/lab_files/fifo/README.md",
        "image/lab_files/fifo/grade_fifo.py",
        "image/lab_files/fifo/my_fifo.py",
        "tests/labs_solutions/fifo/my_fifo.py",
    ]


def test_the_lab_the_recipe_adds_is_listed_started_and_graded(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "image", tree / "image", ignore=shutil.ignore_patterns("__pycache__"))
    for path, text in recipe_files().items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_text(text)
    student = tmp_path / "student"
    student.mkdir()

    listed = malv(student, tree, "list")
    assert listed.returncode == 0, listed.stderr
    assert "a scheduler that runs jobs in the order they came" in listed.stdout

    started = malv(student, tree, "start", "fifo")
    assert started.returncode == 0, started.stderr
    assert (student / "my_fifo.py").read_text() == recipe_files()["image/lab_files/fifo/my_fifo.py"]

    starter = malv(student, tree, "grade", "fifo")
    assert starter.returncode == 1, starter.stdout + starter.stderr
    assert "the jobs finished in the order [1, 2, 0], not [0, 1, 2]" in starter.stdout
    assert "lab fifo: 10/100" in starter.stdout

    shutil.copy(tree / "tests/labs_solutions/fifo/my_fifo.py", student / "my_fifo.py")
    solution = malv(student, tree, "grade", "fifo")
    assert solution.returncode == 0, solution.stdout + solution.stderr
    assert "lab fifo: 100/100" in solution.stdout

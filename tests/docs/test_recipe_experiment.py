"""docs/recipes/experiment.md, walked through: a new experiment is a module `exp/NAME.py`
with `main(argv)` and one name in `image/cli.py`'s `EXPERIMENTS`, and `malv exp NAME` runs it.

The test copies the `exp` and `image` packages to a temporary directory, makes the recipe's
two edits there (the module, shown whole on the recipe's page, and the name), and runs
`malv exp pingpong --quick` from the copy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPE = (ROOT / "docs/recipes/experiment.md").read_text()


def recipe_module() -> str:
    """The experiment's module: the recipe's first Python block."""
    return re.search(r"```python\n(.*?)```", RECIPE, re.S).group(1)


def malv(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{cwd}{os.pathsep}{ROOT}"}
    return subprocess.run(
        [sys.executable, "-m", "image.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_experiment_the_recipe_adds_runs_and_writes_its_results(tmp_path):
    for package in ("exp", "image"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    (tmp_path / "mlaas_modules").symlink_to(ROOT / "mlaas_modules")  # exp/ finds it beside
    (tmp_path / "exp/pingpong.py").write_text(recipe_module())
    cli = tmp_path / "image/cli.py"
    text = cli.read_text()
    assert text.count('    "sweep",\n)') == 1
    cli.write_text(text.replace('    "sweep",\n)', '    "sweep",\n    "pingpong",\n)'))

    done = malv(tmp_path, "exp", "pingpong", "--quick", "--out", "pingpong")
    assert done.returncode == 0, done.stderr
    assert "written to pingpong" in done.stderr
    results = json.loads((tmp_path / "pingpong/results.json").read_text())
    assert set(results) == {"1 CPU", "2 CPU"}
    assert all(ns > 0 for ns in results.values())
    table = (tmp_path / "pingpong/results.md").read_text()
    assert table.startswith("| CPUs | ns per round trip |")

    again = malv(tmp_path, "exp", "pingpong", "--quick", "--out", "again")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again/results.json").read_text() == json.dumps(results, indent=2) + "\n"

    bad = malv(tmp_path, "exp", "pingpong", "--rounds", "0")
    assert bad.returncode == 2 and "must be a positive integer" in bad.stderr


def test_without_its_name_in_the_cli_malv_exp_does_not_know_it(tmp_path):
    done = malv(tmp_path, "exp", "pingpong", "--quick")
    assert done.returncode == 2
    assert "unknown experiment 'pingpong'" in done.stderr

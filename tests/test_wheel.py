"""malvos installed from its wheel, not from the source tree.

The wheel is built from a copy of the tree (`pip wheel --no-deps`), installed
non-editable into a fresh virtual environment that sees this one's packages
(so no dependency is downloaded), and the CLI is run from a directory outside
any source tree: what it reads at run time (manifests, labs, scenarios) must
be package data in the wheel.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds a wheel and installs it in a new venv

ROOT = Path(__file__).resolve().parent.parent
#: Not part of a source distribution: version control, caches, build output.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", "build", "dist", "out", "*.egg-info", "__pycache__", ".*cache", ".hypothesis",
    ".benchmarks", ".venv", "*.nbi", "*.nbc",
)  # fmt: skip


def run(command: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MALV_LAB_FILE")}
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ directory of a venv with malvos installed from its wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"),
                 str(source)], tmp, timeout=600)  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp / "dist").glob("malvos-*.whl")
    venv = tmp / "venv"
    made = run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp)
    assert made.returncode == 0, made.stderr
    bin_dir = venv / "bin"
    pip = run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-deps",
               "--disable-pip-version-check", str(wheel)], tmp)  # fmt: skip
    assert pip.returncode == 0, pip.stderr[-2000:]
    return bin_dir


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    """An empty directory outside any source tree, to run the installed CLI from."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    return work


def test_the_installed_copy_is_the_one_that_runs(installed, elsewhere):
    where = run([str(installed / "python"), "-c", "import image; print(image.__file__)"], elsewhere)
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(installed.parent)), where.stdout


def test_images_and_build_read_the_manifests_from_the_wheel(installed, elsewhere):
    images = run([str(installed / "malv"), "images"], elsewhere)
    assert images.returncode == 0, images.stderr
    assert {"course", "default", "research", "vms"} <= {
        line.split()[0] for line in images.stdout.splitlines()
    }
    build = run([str(installed / "malv"), "build", "course"], elsewhere)
    assert build.returncode == 0, build.stderr
    assert (elsewhere / "course.pyz").is_file()
    boot = run([str(installed / "python"), "course.pyz", "lab", "list"], elsewhere)
    assert boot.returncode == 0 and "sched" in boot.stdout, boot.stderr


def test_a_lab_is_listed_started_and_graded_from_the_wheel(installed, elsewhere):
    malv = str(installed / "malv")
    listed = run([malv, "lab", "list"], elsewhere)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["ipc", "memory", "sched"]
    started = run([malv, "lab", "start", "sched"], elsewhere)
    assert started.returncode == 0, started.stderr
    assert sorted(p.name for p in elsewhere.iterdir()) == ["README-sched.md", "my_sched.py"]
    graded = run([malv, "lab", "grade", "sched"], elsewhere, timeout=600)
    assert graded.returncode == 1, graded.stderr  # the starter does not pass
    assert re.search(r"^lab sched: 30/100$", graded.stdout, re.M), graded.stdout + graded.stderr


def test_the_wheel_ships_no_reference_solution(installed):
    site = next(installed.parent.glob("lib/python*/site-packages"))
    shipped = {p.name for p in (site / "image" / "lab_files").rglob("*")}
    assert {"grade_sched.py", "my_sched.py", "README.md"} <= shipped
    assert "solution" not in shipped and not (site / "tests").exists()
    assert (site / "exp" / "scenarios" / "stacking.toml").is_file()

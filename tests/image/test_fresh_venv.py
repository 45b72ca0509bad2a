"""The issue's acceptance line, literally: the course image, built, boots
`python course.malv --headless --run "ps; poweroff"` from a temporary
directory in a fresh virtual environment holding only the runtime
dependencies the course image needs (installed from the package index, as
CI installs the project)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from image.builder import ROOT, build

pytestmark = pytest.mark.slow  # installs from the package index into a new venv

#: What a course image imports at run time: no numba, no numpy.
COURSE_RUNTIME = ("attrs", "structlog", "cffi", "msgpack")


def test_the_course_image_boots_in_a_fresh_venv_with_only_its_runtime_dependencies(tmp_path):
    image = build(ROOT / "image" / "course.toml", tmp_path / "course.malv")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         *COURSE_RUNTIME],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if pip.returncode != 0:
        pytest.fail(f"pip could not install the runtime dependencies: {pip.stderr[-500:]}")
    work = tmp_path / "elsewhere"
    work.mkdir()
    boot = subprocess.run(
        [str(python), str(image), "--headless", "--run", "ps; poweroff"],
        capture_output=True, text=True, timeout=300, cwd=work, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert boot.returncode == 0, boot.stderr
    assert "$ ps" in boot.stdout and " sh\n" in boot.stdout and "powering off" in boot.stdout
    numba = subprocess.run([str(python), "-c", "import numba"], capture_output=True)
    assert numba.returncode != 0  # the venv really has no numba

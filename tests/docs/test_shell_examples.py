"""Every shell example of README.md and docs/ runs, as the docs show it.

tests/docs/doc_examples.py finds them and says how an example is marked; each one here runs
from a fresh temporary directory, with a timeout, and must exit with the status the docs
give it (0 unless marked) and print every line the docs show under it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from doc_examples import ROOT, Example, examples, runs, unlabelled_commands

TIMEOUT_S = 300
SLOW_TIMEOUT_S = 3600
EXAMPLES = examples()
RUN = [e for e in EXAMPLES if not e.setup]


def _param(example: Example):
    marks = [pytest.mark.slow] if example.slow else []
    return pytest.param(example, id=example.id, marks=marks)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory to run an example from: the repository's image/ and exp/ linked in,
    and ../shared linked to the repository's sibling shared/ where there is one."""
    cwd = tmp_path / "malvos"
    cwd.mkdir()
    for name in ("image", "exp"):
        (cwd / name).symlink_to(ROOT / name)
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (tmp_path / "shared").symlink_to(shared)
    return cwd


@pytest.mark.parametrize("example", [_param(e) for e in RUN])
def test_shell_example_runs_as_shown(example: Example, workdir: Path) -> None:
    if example.needs and not (workdir / example.needs).exists():
        pytest.skip(f"{example.id} reads {example.needs}, which is not here")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    timeout = SLOW_TIMEOUT_S if example.slow else TIMEOUT_S
    pairs = runs(example, sys.executable)
    for i, (line, shown) in enumerate(pairs):
        status = example.exit if i == len(pairs) - 1 else 0  # `exit=N`: the last command's
        result = subprocess.run(
            ["bash", "-c", line],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        out = result.stdout + result.stderr
        assert result.returncode == status, (
            f"{example.id}: `{line}` exited {result.returncode}, not {status}:\n{out[-3000:]}"
        )
        printed = _normalize(out)
        for text in shown:
            if example.unchecked and example.unchecked in text:
                continue
            assert _normalize(text) in printed, (
                f"{example.id}: the docs show {text!r}, which `{line}` did not print:\n{out[-3000:]}"
            )


def _normalize(text: str) -> str:
    return "\n".join(" ".join(line.split()) for line in text.splitlines())


def test_every_shell_example_is_labelled():
    """A fenced block with no language holds no command: each example is `sh` or `console`,
    so the collector finds it."""
    assert unlabelled_commands() == []


def test_only_the_quick_start_is_not_run():
    """`setup` examples (installing, and the test suite itself) are not run; only the
    install steps of the README's Quick start and of Getting started may be one."""
    setup = [e for e in EXAMPLES if e.setup]
    assert {e.path for e in setup} <= {"README.md", "docs/getting-started.md"}
    assert len(setup) <= 3


def test_there_are_examples_in_every_kind_of_page():
    paths = {e.path for e in RUN}
    for page in (
        "README.md",
        "docs/guides/boot.md",
        "docs/guides/images.md",
        "docs/guides/labs.md",
    ):
        assert page in paths

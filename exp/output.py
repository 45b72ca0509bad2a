"""What experiments share: argument parsing, progress, and all-or-nothing output.

An experiment writes into a fresh temporary directory beside ``--out``; only
when everything is written is it moved into place (replacing an older run),
so an error never leaves a half-written results directory.

``results.json`` and ``results.md`` hold only what the seeded simulation
determines, so a seed gives them byte for byte whatever the host's load
(tests/test_determinism.py).  What the host's clock measured (how long runs
took) goes to ``timing.json`` beside them, and to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (``prog: why``)
    and exit status 2, without the usage block above it."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


# -- option types: each refuses a bad value with a message that says why ------------


def positive_int(text: str) -> int:
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return value


def int_in(low: int, high: int):
    """An option type: an integer from `low` to `high`."""

    def check(text: str) -> int:
        value = integer(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {text!r}")
        return value

    check.__name__ = f"integer from {low} to {high}"
    return check


#: The longest last part of an --out path: its temporary siblings add 14 characters
#: (``.NAME.old.XXXXXXXX``) and a file name holds at most 255.
MAX_OUT_NAME = 240


def output_directory(text: str) -> str:
    """An option type for ``--out``: a directory this user can create, or
    replace, beside its parent's other entries.  Checked when the option is
    parsed, before any work starts, by making and removing a temporary
    directory where `results_dir` will make its own: nothing is left behind."""
    if not text.strip() or "\0" in text:
        raise argparse.ArgumentTypeError(f"must name a directory, got {text!r}")
    out = os.path.abspath(text)
    if os.path.exists(out) and not os.path.isdir(out):
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a directory")
    cwd = os.getcwd()
    if os.path.commonpath([out, cwd]) == out:
        raise argparse.ArgumentTypeError(
            f"{text!r} holds the current directory, which a run would replace; "
            "name a directory inside it"
        )
    parts = out.split(os.sep)
    if any(len(part) > 255 for part in parts) or len(parts[-1]) > MAX_OUT_NAME:
        raise argparse.ArgumentTypeError(f"a name in {text!r} is too long")
    parent = os.path.dirname(out)
    while not os.path.exists(parent):  # results_dir makes the missing ones
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: {parent} is not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".malv-probe.", dir=parent))
    except OSError as exc:
        raise argparse.ArgumentTypeError(
            f"cannot write {text!r}: no directory can be made in {parent} ({exc.strerror})"
        ) from None
    return text


def seed(text: str) -> int:
    """An option type for ``--seed``: an integer, 0 or more (numpy's and the
    kernel's generators take no negative seed)."""
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"a seed must be 0 or more, got {text!r}")
    return value


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def parser(name: str, description: str) -> argparse.ArgumentParser:
    p = OneLineParser(prog=f"malv exp {name}", description=description)
    p.add_argument(
        "--out",
        type=output_directory,
        default=os.path.join("results", name),
        help=f"output directory (default results/{name})",
    )
    p.add_argument("--quick", action="store_true", help="a smaller run, for tests and a first look")
    p.add_argument("--seed", type=seed, default=0, help="seed of every random choice (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    return p


@contextmanager
def results_dir(out: str) -> Iterator[str]:
    """Yield a temporary directory; on success it replaces `out`, on error it is removed."""
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", dir=parent)
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would stay on the results
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.exists(out):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old.", dir=parent)
        os.rmdir(old)
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)  # read by setting it: put straight back
    os.umask(mask)
    return mask


class Progress:
    """A one-line progress display on stderr (a line per step when it is not a terminal)."""

    def __init__(self, name: str, total: int, quiet: bool = False) -> None:
        self.name = name
        self.total = total
        self.done = 0
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()

    def step(self, label: str) -> None:
        self.done += 1
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.t0
        width = 24
        filled = int(width * self.done / max(1, self.total))
        line = f"{self.name}: [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {label}  {elapsed:.1f}s"
        if self.tty:
            sys.stderr.write("\r" + line.ljust(100)[:100])
            if self.done == self.total:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def each(self, items: Iterable[Any], label: Any = str) -> Iterator[Any]:
        for item in items:
            yield item
            self.step(label(item))


def write_json(directory: str, data: Any) -> None:
    with open(os.path.join(directory, "results.json"), "w") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=float)
        f.write("\n")


def write_timing(directory: str, timing: dict[str, Any], summary: str) -> None:
    """Write host-clock figures to timing.json, apart from the results, and
    print their `summary` on stderr."""
    with open(os.path.join(directory, "timing.json"), "w") as f:
        json.dump(timing, f, indent=2)
        f.write("\n")
    print(summary, file=sys.stderr)


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_markdown(directory: str, text: str) -> None:
    with open(os.path.join(directory, "results.md"), "w") as f:
        f.write(text)


def pyplot():
    """matplotlib's pyplot on the Agg back end (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

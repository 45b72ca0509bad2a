"""The sharing experiments' command line (`exp/sharing`).

The common options (--trace-dir, --arrivals, --policies, --duration,
--seed, --out, plus --seeds, --jobs, --gpu and --allow-placeholder) on top of `exp.output.parser`,
what they come to (durations, seeds, arrivals), and `safe_main`, which
turns bad input into one error line.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from drivers.vgpu.errors import InvalidArgument
from drivers.vgpu.policies import POLICY_NAMES, policy_class
from drivers.vgpu.presets import PRESETS
from exp.output import parser, positive_float, positive_int


def sharing_parser(
    name: str,
    description: str,
    *,
    duration_s: float,
    policies: Sequence[str] | None,
    duration_help: str | None = None,
) -> argparse.ArgumentParser:
    p = parser(name, description)
    p.add_argument(
        "--trace-dir",
        default=None,
        help="Orion kernel profiles (*.csv); default: the built-in synthetic models",
    )
    p.add_argument(
        "--arrivals",
        default=None,
        help="arrival trace: Orion gaps (.json) or Azure LLM trace (.csv); default: Poisson",
    )
    p.add_argument(
        "--arrival-speedup",
        type=positive_float,
        default=1.0,
        help="divide the trace's gaps by this (default 1)",
    )
    if policies is not None:
        p.add_argument(
            "--policies",
            default=",".join(policies),
            help=f"comma-separated, from {', '.join(POLICY_NAMES)} (default: "
            + ("all" if tuple(policies) == tuple(POLICY_NAMES) else ",".join(policies))
            + ")",
        )
    else:  # a LithOS-only comparison of single closed-loop tenants
        p.add_argument(
            "--policies",
            default="lithos",
            help="only lithos (with and without the mechanism); --arrivals does not apply",
        )
    p.add_argument(
        "--duration",
        type=positive_float,
        default=None,
        help=duration_help
        or f"simulated seconds per run (default {duration_s:g}, quick {duration_s / 5:g})",
    )
    p.add_argument(
        "--seeds",
        type=positive_int,
        default=1,
        help="seeds per configuration (default %(default)s)",
    )
    p.add_argument(
        "--jobs",
        type=positive_int,
        default=None,
        help="parallel processes (default: the CPU count)",
    )
    p.add_argument(
        "--gpu",
        default="a100",
        choices=tuple(PRESETS),
        help="the GPU preset simulated (default a100); profiles measured on another "
        "are carried to it (drivers/vgpu/traces.py, carry_to)",
    )
    p.add_argument(
        "--allow-placeholder",
        action="store_true",
        help="run a profile of placeholder durations (refused by default), marked in the results",
    )
    p.add_argument(
        "--engine",
        default="block",
        choices=("block", "wave"),
        help="the vGPU engine's mode: block-exact (default) or waves (faster, see the README)",
    )
    p.add_argument(
        "--min-requests",
        type=positive_int,
        default=None,
        help=f"refuse a run whose open-loop tenant gets fewer requests, over its seeds "
        f"(default {P99_SAMPLES}, what a P99 needs; --quick: 1, with thin percentiles marked)",
    )
    p.set_defaults(default_duration_s=duration_s)
    return p


#: Requests a P99 needs: one in a hundred is in its tail.
P99_SAMPLES = 100


def min_requests(args: argparse.Namespace) -> int:
    if args.min_requests is not None:
        return args.min_requests
    return 1 if args.quick else P99_SAMPLES


def parse_policies(text: str, only: str | None = None) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise InvalidArgument("--policies names no policy")
    for n in names:
        policy_class(n)
    if only is not None and names != [only]:
        raise InvalidArgument(
            f"--policies: this experiment compares {only} with itself, got {text!r}"
        )
    return names


#: The longest run, in simulated seconds (a run's memory grows with it).
MAX_DURATION_S = 120


def duration_ns(args: argparse.Namespace) -> int:
    seconds = args.duration
    if seconds is None:
        seconds = args.default_duration_s / (5 if args.quick else 1)
    if not seconds > 0:
        raise InvalidArgument(f"--duration must be positive, got {seconds}")
    if seconds > MAX_DURATION_S:
        raise InvalidArgument(
            f"--duration {seconds:g} s is more than a run can hold: a run keeps every atom, "
            f"about 30 MB per simulated second, so at most {MAX_DURATION_S} s (use more --seeds)"
        )
    return int(seconds * 1e9)


def seeds(args: argparse.Namespace) -> list[int]:
    if args.seeds < 1:
        raise InvalidArgument(f"--seeds must be at least 1, got {args.seeds}")
    return [args.seed + i for i in range(args.seeds)]


def check_out(out: str) -> None:
    """Refuse an --out that holds something other than an earlier run's results."""
    path = Path(out)
    if path.exists() and (
        not path.is_dir() or (any(path.iterdir()) and not (path / "results.json").exists())
    ):
        raise InvalidArgument(
            f"--out {out}: exists and does not hold earlier results (no results.json); "
            "choose a new directory"
        )


def done_message(out: str, started: float) -> None:
    print(f"written to {out} in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def safe_main(main: Callable[[list[str] | None], int], argv: list[str] | None) -> int:
    """Run `main`, turning bad input into one clear error line."""
    try:
        return main(argv)
    except (InvalidArgument, ValueError, OSError) as err:
        print(f"malv exp: {err}", file=sys.stderr)
        return 2

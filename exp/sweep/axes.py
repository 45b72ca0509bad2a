"""The axes of a sweep (`exp/sweep`): what `--vary NAME=VALUES` means.

    load=1:4:3      3 loads from 1 to 4, evenly spaced in log (1, 2, 4):
                    a multiple of every open-loop tenant's arrival rate
    slip=1.05:1.2:3 3 slips from 1.05 to 1.2, evenly spaced (LithOS's
                    DVFS and right-sizing slip: 1.1 allows 10% slowdown)
    seed=0:3        seeds 0, 1, 2 (a range, its end excluded; default
                    --seed and --seeds)
    load=0.5,1,2    any axis: a comma-separated list

A bad value is one `InvalidArgument` line naming the option.
"""

from __future__ import annotations

import argparse

import numpy as np

from drivers.vgpu.errors import InvalidArgument
from exp.output import positive_float

AXES = ("load", "seed", "slip")
#: The defaults of a sweep with no --vary for that axis.
DEFAULTS = {"load": "1:4:3", "slip": "1.05,1.1,1.2"}


def parse_vary(options: list[str], seeds: tuple[int, ...]) -> dict[str, tuple]:
    """Every axis's values, from the --vary options over the defaults."""
    texts = {**DEFAULTS, "seed": ",".join(map(str, seeds))}
    for option in options:
        name, sep, values = option.partition("=")
        name = name.strip()
        if not sep or name not in AXES:
            raise InvalidArgument(
                f"--vary {option!r}: expected NAME=VALUES with NAME one of {', '.join(AXES)}"
            )
        texts[name] = values
    return {name: axis_values(name, text) for name, text in texts.items()}


def axis_values(name: str, text: str) -> tuple[float, ...]:
    where = f"--vary {name}={text}"
    parts = text.split(":")
    if len(parts) == 1:
        value = _integer if name == "seed" else _number
        values = [value(v, where) for v in text.split(",")]
    elif name == "seed" and len(parts) == 2:
        lo, hi = (_integer(v, where) for v in parts)
        values = list(range(lo, hi))
    elif len(parts) == 3 and name != "seed":
        lo, hi = (_number(v, where) for v in parts[:2])
        n = _integer(parts[2], where)
        if n < 1 or hi < lo:
            raise InvalidArgument(f"{where}: expected LOW:HIGH:COUNT with LOW <= HIGH, COUNT >= 1")
        spaced = np.geomspace if name == "load" and lo > 0 else np.linspace
        values = [round(float(v), 6) for v in spaced(lo, hi, n)]
    else:
        form = "LOW:HIGH (a range)" if name == "seed" else "LOW:HIGH:COUNT"
        raise InvalidArgument(f"{where}: expected {form} or a comma-separated list")
    if not values:
        raise InvalidArgument(f"{where}: names no value")
    if name == "seed":
        if any(v != int(v) for v in values):
            raise InvalidArgument(f"{where}: seeds are integers")
        values = [int(v) for v in values]
    elif name == "slip" and any(v <= 1 for v in values):
        raise InvalidArgument(f"{where}: every slip must be above 1")
    return tuple(dict.fromkeys(values))


def _number(text: str, where: str) -> float:
    try:
        return positive_float(text.strip())
    except argparse.ArgumentTypeError as err:
        raise InvalidArgument(f"{where}: {err}") from None


def _integer(text: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument(f"{where}: {text.strip()!r} is not an integer") from None

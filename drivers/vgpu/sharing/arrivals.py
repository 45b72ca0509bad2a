"""Request arrival processes for open-loop tenants (`drivers/vgpu/sharing`).

Two real formats are read from any path (the project ships neither file):

* Orion's inter-arrival gaps: a JSON list of gaps in seconds
  (``orion_inter_arrival_times.json``);
* Azure's LLM inference trace: a CSV with ``TIMESTAMP,ContextTokens,
  GeneratedTokens`` (``AzureLLMInferenceTrace_code.csv``); the arrivals are
  the timestamps, relative to the first.

A malformed file raises `ArrivalFormatError` with one line naming the file
and the row (CSV line, or JSON item).  The built-in default is a Poisson
process.  `arrival_times_ns` turns a trace into arrival instants for a run:
it starts at a seed-chosen point of the trace and wraps around, so seeds
give different stretches of the same real process.
"""

from __future__ import annotations

import csv
import json
import math
from datetime import datetime
from pathlib import Path

import attrs
import numpy as np

from drivers.vgpu.errors import InvalidArgument, TraceFormatError

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


class ArrivalFormatError(TraceFormatError):
    """An arrival file is malformed; the message names the file and the row."""


@attrs.frozen
class ArrivalTrace:
    """Gaps between successive requests, in seconds."""

    name: str
    gaps_s: tuple[float, ...]
    source: str

    @property
    def mean_rate_per_s(self) -> float:
        return len(self.gaps_s) / sum(self.gaps_s)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err
        raise ArrivalFormatError(f"{path}: cannot read: {reason}") from None


def load_orion_gaps(path: str | Path) -> ArrivalTrace:
    """Orion's JSON list of inter-arrival gaps in seconds."""
    path = Path(path)
    text = _read(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ArrivalFormatError(f"{path}: line {err.lineno}: not JSON: {err.msg}") from None
    if not isinstance(data, list):
        raise ArrivalFormatError(f"{path}: expected a JSON list of gaps in seconds")
    if not data:
        raise ArrivalFormatError(f"{path}: the list of gaps is empty")
    gaps = []
    for item, gap in enumerate(data):
        if isinstance(gap, bool) or not isinstance(gap, int | float) or not math.isfinite(gap):
            raise ArrivalFormatError(f"{path}: item {item}: gap {gap!r} is not a finite number")
        if gap < 0:
            raise ArrivalFormatError(f"{path}: item {item}: gap {gap!r} is negative")
        gaps.append(float(gap))
    if sum(gaps) <= 0:
        raise ArrivalFormatError(f"{path}: every gap is zero")
    return ArrivalTrace(path.stem, tuple(gaps), str(path))


def _timestamp(path: Path, line: int, text: str) -> float:
    text = text.strip()
    head, dot, frac = text.partition(".")
    if dot:  # Azure writes seven fractional digits; datetime takes up to six
        text = f"{head}.{frac[:6]}"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ArrivalFormatError(f"{path}: line {line}: TIMESTAMP {text!r} is not a date") from None


def _count(path: Path, line: int, column: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ArrivalFormatError(
            f"{path}: line {line}: {column} {text!r} is not an integer"
        ) from None
    if value < 0:
        raise ArrivalFormatError(f"{path}: line {line}: {column} {value} is negative")
    return value


def load_azure_llm_csv(path: str | Path) -> ArrivalTrace:
    """Azure's LLM inference trace: arrival gaps from its TIMESTAMP column."""
    path = Path(path)
    rows = csv.reader(_read(path).splitlines())
    header = next(rows, None)
    if header is None:
        raise ArrivalFormatError(
            f"{path}: empty file, expected the header {','.join(AZURE_COLUMNS)}"
        )
    if tuple(h.strip() for h in header) != AZURE_COLUMNS:
        raise ArrivalFormatError(
            f"{path}: line 1: columns are {','.join(header)!r}, expected {','.join(AZURE_COLUMNS)}"
        )
    times: list[float] = []
    for line, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != len(AZURE_COLUMNS):
            raise ArrivalFormatError(
                f"{path}: line {line}: {len(row)} fields, expected {len(AZURE_COLUMNS)}"
            )
        t = _timestamp(path, line, row[0])
        _count(path, line, "ContextTokens", row[1])
        _count(path, line, "GeneratedTokens", row[2])
        if times and t < times[-1]:
            raise ArrivalFormatError(f"{path}: line {line}: TIMESTAMP goes back in time")
        times.append(t)
    if len(times) < 2:
        raise ArrivalFormatError(f"{path}: needs at least two requests, found {len(times)}")
    gaps = tuple(b - a for a, b in zip(times, times[1:], strict=False))
    if sum(gaps) <= 0:
        raise ArrivalFormatError(f"{path}: every request has the same TIMESTAMP")
    return ArrivalTrace(path.stem, gaps, str(path))


def load_arrivals(path: str | Path) -> ArrivalTrace:
    """An arrival trace in either format, told apart by the file's suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return load_orion_gaps(path)
    if suffix == ".csv":
        return load_azure_llm_csv(path)
    raise ArrivalFormatError(
        f"{path}: unknown arrival format; expected Orion gaps (.json) or Azure's LLM trace (.csv)"
    )


def arrival_times_ns(
    trace: ArrivalTrace, duration_ns: int, seed: int = 0, speedup: float = 1.0
) -> tuple[int, ...]:
    """Arrival instants within [0, duration) from `trace`, from a seed-chosen start, wrapping."""
    if speedup <= 0:
        raise InvalidArgument(f"arrival speedup must be positive, got {speedup}")
    gaps = trace.gaps_s
    start = int(np.random.default_rng(seed).integers(len(gaps))) if seed else 0
    times: list[int] = []
    t, i = 0.0, start
    while True:
        t += gaps[i % len(gaps)] / speedup
        if t * 1e9 >= duration_ns:
            return tuple(times)
        times.append(int(t * 1e9))
        i += 1


def poisson_times_ns(rate_per_s: float, duration_ns: int, seed: int = 0) -> tuple[int, ...]:
    """Poisson arrivals at `rate_per_s` within [0, duration)."""
    if not rate_per_s > 0:
        raise InvalidArgument(f"arrival rate must be positive, got {rate_per_s}")
    rng = np.random.default_rng(seed)
    expected = rate_per_s * duration_ns / 1e9
    gaps = rng.exponential(1e9 / rate_per_s, int(expected + 10 * math.sqrt(expected) + 10))
    times = np.cumsum(gaps)
    return tuple(int(t) for t in times[times < duration_ns])

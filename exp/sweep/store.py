"""Where a sweep keeps its points (`exp/sweep`): one JSON file per point.

Each point's result is written to a temporary name and renamed into
`OUT/points/DIGEST/`, so an interrupted sweep leaves only whole points, and
a sweep started again skips the points it finds there.  A point keeps what
the merged tables need (per tenant: latencies, counts, TPC time; the
device's energy), not the run's GPU timeline.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import attrs

from drivers.vgpu.sharing import RunResult
from drivers.vgpu.sharing.sim import StreamResult
from exp.sharing import run_job
from exp.sharing.running import RunJob


def run_point(job: RunJob) -> dict[str, Any]:
    """Run one point, in a worker (a local process or a Ray task), and keep
    only what the merged results need: a few plain values to send back."""
    return reduce(run_job(job))


def reduce(result: RunResult) -> dict[str, Any]:
    return {
        "policy": result.policy,
        "window_ns": result.window_ns,
        "energy_j": result.energy_j,
        "wall_s": result.wall_s,
        "extra": result.extra,
        "streams": [attrs.asdict(s) for s in result.streams],
    }


def restore(kept: dict[str, Any]) -> RunResult:
    streams = tuple(
        StreamResult(**{**s, "latencies_ns": tuple(s["latencies_ns"])}) for s in kept["streams"]
    )
    return RunResult(kept["policy"], kept["window_ns"], kept["energy_j"], kept["wall_s"],
                     streams, kept["extra"], (), (), ())  # fmt: skip


class PointStore:
    """The points/DIGEST directory of a sweep's output."""

    def __init__(self, out: str, digest: str) -> None:
        self.directory = Path(out) / "points" / digest

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def load(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.path(name).read_text())
        except (OSError, ValueError):
            return None  # absent, or not whole: run it again

    def save(self, name: str, kept: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=self.directory)
        with os.fdopen(fd, "w") as f:
            json.dump(kept, f, default=float)
        os.replace(tmp, self.path(name))

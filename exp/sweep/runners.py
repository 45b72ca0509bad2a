"""Where a sweep's points run (`exp/sweep`): local processes, or a Ray cluster.

Local points go to the sharing experiments' process pool
(`exp.sharing.running.run_each`).  With `--ray [ADDRESS]` each point is one
Ray task (`ray.remote`), and `ray.wait` hands back results as they finish;
Ray does the scheduling.  With no address a local Ray starts for the sweep
and stops after it; with one, the sweep joins that cluster (`ray://HOST:10001`
or `HOST:6379`) and ships this source tree to its workers
(`runtime_env={"working_dir": ...}`), so they need Python and the
dependencies, not malvos; profiles a scenario names by path must exist at
that path on every worker.  Ray is the optional extra `malvos[ray]`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from drivers.vgpu.errors import InvalidArgument
from exp.sharing.running import RunJob, run_each
from exp.sweep.store import run_point

Done = Callable[[int, dict[str, Any]], None]

#: The source tree a cluster's workers get (what `import exp` needs).
SOURCE = Path(__file__).resolve().parents[2]
#: What not to ship: history, results, caches.
EXCLUDES = [".git", "results", "**/__pycache__", "*.png", ".venv"]
#: Object store of a local Ray: results are small, and the host is shared.
LOCAL_OBJECT_STORE_BYTES = 100 * 1024 * 1024

INSTALL_RAY = "--ray needs Ray: python3 -m pip install -e '.[ray]'"


def run_local(jobs: Sequence[RunJob], workers: int | None, done: Done) -> None:
    run_each(jobs, workers, run_point, done)


def run_ray(jobs: Sequence[RunJob], address: str | None, workers: int | None, done: Done) -> None:
    """Each job a Ray task; `done` as each finishes.  Starts a local Ray
    when `address` is None (with `workers` CPUs), and stops what it started."""
    try:
        import ray
    except ImportError:
        raise InvalidArgument(INSTALL_RAY) from None
    if address is None:
        ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False,
                 object_store_memory=LOCAL_OBJECT_STORE_BYTES, log_to_driver=False,
                 logging_level=logging.ERROR,
                 runtime_env={"env_vars": {"PYTHONPATH": str(SOURCE)}})  # fmt: skip
    else:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR,
                 runtime_env={"working_dir": str(SOURCE), "excludes": EXCLUDES})  # fmt: skip
    try:
        task = ray.remote(num_cpus=1)(run_point)
        order = sorted(range(len(jobs)), key=lambda i: -jobs[i].weight)
        index = {task.remote(jobs[i]): i for i in order}
        pending = list(index)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                done(index[ref], ray.get(ref))
    finally:
        ray.shutdown()

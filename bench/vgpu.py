"""vGPU engine benchmarks: dispatch rate, engine vs reference model, numba compile vs cache.

The workload is *inference stacking* on an A100, as in LithOS: eight
contexts, each a stream of one model's kernels from the synthetic traces
(ResNet-50 inference and training, BERT, MobileNetV2), atomized to 300 us.
Context 0 is high priority and may use every TPC; the seven others are best
effort, each on its own seventh of the TPCs.  Everything is launched up front
and run with `run_batch`: one compiled call.

Figures: blocks dispatched per second, in the engine's block-exact mode
and in its wave mode (blocks/s equivalent: the same blocks, dealt a wave at
a time), on this workload and on a variant whose best-effort contexts have
overlapping masks (where the two modes differ: with the largest move of a
kernel completion-time percentile); the block mode's rate against the
plain-Python reference model on a shorter run of the workload (the results
must be identical, or the benchmark fails); and the engine's first compiled
call in a fresh interpreter, with an empty numba cache (compile) and with the
cache it left (load), next to the first call of a trivial cached function:
most of a cached load is numba's own start-up.
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.report import Figure
from drivers.vgpu.api import VirtualGpu
from drivers.vgpu.engine import Engine
from drivers.vgpu.presets import a100
from drivers.vgpu.reference import ReferenceEngine
from drivers.vgpu.traces import model_workload
from drivers.vgpu.work import atomize, mask_of

REPO = Path(__file__).resolve().parents[1]
MODELS = (
    "resnet50_b4_inference",
    "resnet50_b32_training",
    "bert_b2_inference",
    "mobilenetv2_b4_inference",
)
N_CONTEXTS = 8
ATOM_NS = 300_000


def stacking_workload(
    gpu: VirtualGpu, kernels_per_context: int, seed: int = 0, overlapping: bool = False
) -> None:
    """Launch the stacking workload described above on `gpu`; `overlapping`
    gives each best-effort context two sevenths of the TPCs, its own and
    the next context's (the last wraps around)."""
    n = gpu.spec.n_tpcs
    width = n // (N_CONTEXTS - 1)
    span = 2 * width if overlapping else width
    for index in range(N_CONTEXTS):
        ctx = gpu.create_context()
        kernels = model_workload(MODELS[index % len(MODELS)], seed + index).kernels
        repeats = math.ceil(kernels_per_context / len(kernels))
        if index == 0:
            mask, priority = gpu.spec.all_tpcs_mask, 1
        else:
            low = (index - 1) * width
            mask, priority = mask_of(t % n for t in range(low, low + span)), 0
        for kernel in (kernels * repeats)[:kernels_per_context]:
            kernel_id = gpu.add_kernel(kernel)
            for atom in atomize(kernel, ATOM_NS, n, mask):
                gpu.launch(ctx, kernel_id, atom.begin, atom.end, atom.mask, priority)


def timed_batch(
    device_cls, kernels_per_context: int, record_blocks: bool = False, overlapping: bool = False
):
    """Build the workload, then time `run_batch` alone; return (gpu, events, seconds)."""
    gpu = device_cls(a100, record_blocks=record_blocks)
    stacking_workload(gpu, kernels_per_context, overlapping=overlapping)
    start = time.perf_counter()
    events = gpu.run_batch()
    return gpu, events, time.perf_counter() - start


def dispatch_rate(
    kernels_per_context: int, repeats: int, mode: str = "block", overlapping: bool = False
) -> tuple[float, int, list]:
    """Best-of-`repeats` blocks dispatched per second, the blocks per run, and its events."""
    best = math.inf
    for _ in range(repeats):
        device = functools.partial(Engine, mode=mode)
        gpu, events, seconds = timed_batch(device, kernels_per_context, overlapping=overlapping)
        best = min(best, seconds)
    return gpu.blocks_dispatched / best, gpu.blocks_dispatched, events


def completion_percentiles_ns(events: list, high: bool) -> np.ndarray:
    """p50, p90, p99 and max of the kernels' completion times, of the
    high-priority context or of the best-effort ones."""
    times = [e.time_ns for e in events if e.kernel_done and (e.ctx == 0) == high]
    return np.percentile(times, (50, 90, 99, 100))


def largest_percentile_move_ns(events: list, baseline_events: list) -> int:
    """The largest move of a completion-time percentile from the baseline run."""
    return max(
        int(np.abs(completion_percentiles_ns(events, high) - completion_percentiles_ns(
            baseline_events, high)).max())
        for high in (True, False)
    )  # fmt: skip


def engine_vs_reference(kernels_per_context: int, repeats: int) -> tuple[float, float, int]:
    """Rates of both back ends on the same workload; raises if their results differ."""
    reference, ref_events, ref_seconds = timed_batch(ReferenceEngine, kernels_per_context, True)
    engine_seconds = math.inf
    for _ in range(repeats):
        engine, events, seconds = timed_batch(Engine, kernels_per_context, True)
        engine_seconds = min(engine_seconds, seconds)
    if events != ref_events or engine.block_log() != reference.block_log():
        raise AssertionError("the engine and the reference model disagree on the benchmark")
    if not math.isclose(engine.energy_j, reference.energy_j, rel_tol=1e-9):
        raise AssertionError("the engine and the reference model disagree on energy")
    blocks = engine.blocks_dispatched
    return blocks / engine_seconds, blocks / ref_seconds, blocks


_FIRST_RUN = """
import time
from drivers.vgpu.engine import Engine
from drivers.vgpu.work import KernelDesc
start = time.perf_counter()  # every compiled function's first call is timed
gpu = Engine("a100")
gpu.launch(gpu.create_context(), KernelDesc("k", 10, 1, 100))
gpu.run_batch()
print(time.perf_counter() - start)
"""


_TRIVIAL_MODULE = """
from numba import njit


@njit(cache=True)
def add_one(x):
    return x + 1
"""

_TRIVIAL_RUN = """
import time
import trivial_numba
start = time.perf_counter()
trivial_numba.add_one(1)
print(time.perf_counter() - start)
"""


def first_run_seconds(cache_dir: str, script: str = _FIRST_RUN, path: str = "") -> float:
    """Time of a script's first compiled call, in a fresh interpreter."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    if path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def numba_first_use_seconds(workdir: str) -> float:
    """Numba's own first-use cost: a trivial cached function's first call."""
    module_dir = Path(workdir) / "module"
    module_dir.mkdir()
    (module_dir / "trivial_numba.py").write_text(_TRIVIAL_MODULE)
    cache = str(Path(workdir) / "cache")
    first_run_seconds(cache, _TRIVIAL_RUN, str(module_dir))  # compile and cache it
    return first_run_seconds(cache, _TRIVIAL_RUN, str(module_dir))


def run(quick: bool = False) -> list[Figure]:
    timed_batch(Engine, 2)  # load (or compile) the engine before timing it
    kernels, repeats = (60, 1) if quick else (600, 3)
    rate, blocks, _ = dispatch_rate(kernels, repeats)
    wave_rate, wave_blocks, _ = dispatch_rate(kernels, repeats, "wave")
    if wave_blocks != blocks:
        raise AssertionError("the wave mode dispatched other blocks than the block mode")
    overlap_rate, _, overlap_events = dispatch_rate(kernels, repeats, overlapping=True)
    overlap_wave_rate, _, overlap_wave_events = dispatch_rate(kernels, repeats, "wave", True)
    move_ns = largest_percentile_move_ns(overlap_wave_events, overlap_events)
    engine_rate, reference_rate, compared = engine_vs_reference(3 if quick else 8, 5)
    with tempfile.TemporaryDirectory(prefix="malvos-numba-") as cache:
        compile_s = first_run_seconds(cache)
        cached_s = first_run_seconds(cache)
    with tempfile.TemporaryDirectory(prefix="malvos-numba-") as workdir:
        numba_init_s = numba_first_use_seconds(workdir)
    return [
        Figure("vgpu engine block dispatches", rate, "blocks/s", target=">= 10M/s"),
        Figure(
            "vgpu wave mode, same workload",
            wave_rate,
            "blocks/s",
            baseline=rate,
            baseline_name="block mode",
        ),
        Figure(
            "vgpu wave mode, overlapping masks",
            overlap_wave_rate,
            "blocks/s",
            baseline=overlap_rate,
            baseline_name="block mode",
        ),
        Figure("vgpu wave mode's largest move", move_ns / 1e3, "us of a completion percentile"),
        Figure(
            "vgpu engine vs reference model",
            engine_rate,
            "blocks/s",
            baseline=reference_rate,
            baseline_name="reference",
            target=">= 30x",
        ),
        Figure("vgpu engine = reference, blocks", compared, "identical blocks"),
        Figure("vgpu numba compile, cold cache", compile_s, "s"),
        Figure(
            "vgpu numba cached load", cached_s, "s", baseline=compile_s, baseline_name="compile"
        ),
        Figure(
            "vgpu cached load vs numba's own",
            cached_s,
            "s",
            baseline=numba_init_s,
            baseline_name="trivial cached fn",
        ),
        Figure("vgpu dispatch benchmark size", blocks, "blocks"),
    ]

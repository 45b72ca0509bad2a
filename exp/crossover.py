"""`malv exp crossover`: kernel-space inference on the CPU or the vGPU (LAKE §6).

For two MLPs — LinnOS's I/O latency classifier (31 -> 256 -> 2) and KML's
readahead model (5 -> 15 -> 5 -> 4) — it measures the virtual cost of one
inference batch on each back end, for every batch size from 1 to 1024: the
CPU back end (the CPU cost model of `kernel.mlaas.inference`) and the vGPU
back end (`drivers/vgpu/inference.py`: API remoting, PCIe copies, and the
functional MLP kernel timed by the vGPU engine), both computing the real
outputs, which are checked against each other.

Reported: the batch size from which on the vGPU is cheaper (the crossover),
and how often the kernel's crossover policy — after calibrating on a few
measured batches, as it does while running — picks the cheaper side.

Contention: the same sweep with a background process keeping the vGPU busy
(long kernels on every TPC).  The vGPU cost then includes waiting for it,
and LAKE's contention policy (more than one GPU process, over 70%
utilisation) keeps batches on the CPU; the experiment checks that this
choice is the cheaper one.
"""

from __future__ import annotations

import sys

import numpy as np

from exp.output import (
    Progress,
    markdown_table,
    parser,
    pyplot,
    results_dir,
    write_json,
    write_markdown,
)
from kernel import Kernel

MODELS = {"linnos": (31, 256, 2), "kml": (5, 15, 5, 4)}
CALIBRATION_BATCHES = (1, 64, 1024)
BATCH_GAP_NS = 1_000_000  # batches come 1 to 1.25 ms apart


def crossover(rows: list[int], cheaper: list[str]) -> int | None:
    """The batch size from which on the vGPU is cheaper at every larger size measured."""
    start = None
    for r, side in zip(rows, cheaper, strict=True):
        if side == "vgpu":
            start = r if start is None else start
        else:
            start = None
    return start


def _setup(contended: bool, seed: int):
    from drivers.vgpu.engine import Engine
    from drivers.vgpu.inference import attach
    from drivers.vgpu.work import KernelDesc

    k = Kernel(seed=seed, cpus=1)
    gpu = Engine("a100")
    backend = attach(k, gpu)
    background = None
    if contended:
        # Another GPU process: training that keeps every TPC busy (a second of
        # 200 us blocks, longer than the whole sweep).
        ctx = gpu.create_context()
        hog = KernelDesc("training", grid_blocks=gpu.spec.n_tpcs * 4 * 5000, blocks_per_tpc=4,
                         block_duration_ns=200_000, priority=0)  # fmt: skip
        background = (ctx, hog)
        gpu.launch(ctx, hog)
    return k, gpu, backend, background


def sweep(layers: tuple[int, ...], sizes: list[int], contended: bool, seed: int) -> dict:
    k, gpu, backend, background = _setup(contended, seed)
    try:
        service = k.mlaas.inference
        model = service.model("experiment", layers, seed=seed)
        rng = np.random.default_rng(seed)
        cpu = service.backends["cpu"]
        for (
            rows
        ) in CALIBRATION_BATCHES:  # the policy learns each side's real cost, as it would in use
            x = rng.standard_normal((rows, layers[0])).astype(np.float32)
            for kind in ("cpu", "vgpu"):
                _, cost = service.backends[kind].run(model, x, k.loop.now_ns)
                service.policy.observe(kind, model, rows, cost)
        out: dict = {
            "rows": [],
            "cpu_ns": [],
            "vgpu_ns": [],
            "choice": [],
            "why": [],
            "max_abs_error": 0.0,
        }
        now = k.loop.now_ns
        for rows in sizes:
            x = rng.standard_normal((rows, layers[0])).astype(np.float32)
            choice, why = service.policy.choose(model, rows)
            y_cpu, cpu_ns = cpu.run(model, x, now)
            y_gpu, gpu_ns = backend.run(model, x, now)
            out["max_abs_error"] = max(out["max_abs_error"], float(np.abs(y_cpu - y_gpu).max()))
            out["rows"].append(rows)
            out["cpu_ns"].append(cpu_ns)
            out["vgpu_ns"].append(gpu_ns)
            out["choice"].append(choice)
            out["why"].append(why)
            # Batches come about a millisecond apart: meanwhile a busy vGPU fills up with others' work.
            now = max(now, gpu.now_ns) + BATCH_GAP_NS + int(rng.integers(0, BATCH_GAP_NS // 4))
            k.loop.advance_to(now)
        cheaper = [
            "vgpu" if g < c else "cpu" for c, g in zip(out["cpu_ns"], out["vgpu_ns"], strict=True)
        ]
        out["agreement"] = sum(a == b for a, b in zip(cheaper, out["choice"], strict=True)) / len(
            sizes
        )
        out["stayed_on_cpu"] = out["choice"].count("cpu") / len(sizes)
        out["crossover_rows"] = crossover(out["rows"], cheaper)
        out["policy_crossover_rows"] = next((r for r, c in zip(out["rows"], out["choice"], strict=True)
                                             if c == "vgpu"), None)  # fmt: skip
        return out
    finally:
        k.shutdown()


def measure(quick: bool, seed: int, quiet: bool = False) -> dict:
    sizes = sorted({*range(1, 65), *range(64, 1025, 16 if quick else 4), 1024})
    if quick:
        sizes = sorted({*range(1, 17), *(2**i for i in range(11)), *range(16, 1025, 64), 1024})
    progress = Progress("crossover", 2 * len(MODELS), quiet)
    results: dict = {"batch_sizes": [sizes[0], sizes[-1]], "seed": seed, "models": {}}
    for name, layers in MODELS.items():
        entry = {"layers": list(layers)}
        for contended in (False, True):
            entry["contended" if contended else "idle"] = sweep(layers, sizes, contended, seed)
            progress.step(f"{name} ({'contended' if contended else 'idle'} vGPU)")
        results["models"][name] = entry
    return results


def table(results: dict) -> str:
    def at(s: dict, n: int) -> str:
        i = s["rows"].index(n)
        return f"{s['cpu_ns'][i] / 1e3:.1f} / {s['vgpu_ns'][i] / 1e3:.1f}"

    idle, busy = [], []
    for name, m in results["models"].items():
        s, c = m["idle"], m["contended"]
        layers = "→".join(map(str, m["layers"]))
        idle.append((name, layers, s["crossover_rows"] or "never", s["policy_crossover_rows"] or "never",
                     f"{100 * s['agreement']:.0f}%", at(s, 1), at(s, 64), at(s, 1024)))  # fmt: skip
        busy.append((name, layers, c["crossover_rows"] or "never", f"{100 * c['stayed_on_cpu']:.0f}%",
                     at(c, 1), at(c, 64), at(c, 1024)))  # fmt: skip
    return (
        "# crossover: kernel-space inference on the CPU or the vGPU\n\n"
        "Cost of one batch in virtual µs (CPU / vGPU).  The crossover is the batch size from which on the vGPU "
        "is cheaper.  The policy picks a side per batch size, after calibrating on batches of "
        f"{', '.join(map(str, CALIBRATION_BATCHES))}.\n\n## idle vGPU\n\n"
        + markdown_table(
            (
                "model",
                "layers",
                "crossover (measured)",
                "crossover (policy)",
                "policy picks the cheaper side",
                "batch 1",
                "batch 64",
                "batch 1024",
            ),
            idle,
        )  # fmt: skip
        + "\n## vGPU busy with another process (contention policy: > 1 GPU process and > 70% busy)\n\n"
        + markdown_table(
            (
                "model",
                "layers",
                "crossover under contention",
                "policy stays on the CPU",
                "batch 1",
                "batch 64",
                "batch 1024",
            ),
            busy,
        )  # fmt: skip
        + "\nUnder contention a large batch can still be cheaper on the vGPU; LAKE's contention policy keeps it "
        "on the CPU anyway, so as not to slow the process that is using the GPU.\n"
    )


#: The contended line's running median takes the batch sizes within this
#: many octaves on each side of a point (the sizes are spaced unevenly), and
#: at least the `SMOOTHING_MIN_POINTS` nearest.
SMOOTHING_OCTAVES = 0.5
SMOOTHING_MIN_POINTS = 7


def running_quartiles(rows, values: np.ndarray, octaves: float) -> tuple[np.ndarray, ...]:
    """Median, 25th and 75th percentile of the values near each batch size (in log2)."""
    log_rows = np.log2(np.asarray(rows, float))
    windows = []
    for x in log_rows:
        distance = np.abs(log_rows - x)
        count = max(int((distance <= octaves).sum()), SMOOTHING_MIN_POINTS)
        windows.append(values[np.argsort(distance, kind="stable")[:count]])
    return tuple(np.array([np.percentile(w, q) for w in windows]) for q in (50, 25, 75))


def plot(results: dict, directory: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(results["models"]), figsize=(12, 4.4))
    for ax, (name, m) in zip(axes, results["models"].items(), strict=True):
        idle, busy = m["idle"], m["contended"]
        ax.plot(idle["rows"], [c / 1e3 for c in idle["cpu_ns"]], "C0-", label="CPU")
        ax.plot(idle["rows"], [g / 1e3 for g in idle["vgpu_ns"]], "C1-", label="vGPU (idle)")
        # Under contention each batch's cost depends on what the others have
        # queued at that instant: the raw costs, faint, and their running
        # median with its interquartile band.
        rows, cost_us = busy["rows"], np.asarray(busy["vgpu_ns"], float) / 1e3
        median, low, high = running_quartiles(rows, cost_us, SMOOTHING_OCTAVES)
        ax.scatter(rows, cost_us, s=4, color="C3", alpha=0.25, label="vGPU (contended), each batch")
        ax.plot(rows, median, "C3-", label="vGPU (contended), median within half an octave")
        ax.fill_between(rows, low, high, color="C3", alpha=0.2, label="interquartile range")
        if idle["crossover_rows"]:
            ax.axvline(idle["crossover_rows"], color="C1", lw=0.8, ls="--")
            ax.annotate(f"crossover {idle['crossover_rows']}", (idle["crossover_rows"], ax.get_ylim()[0]),
                        xytext=(4, 10), textcoords="offset points", fontsize=8)  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size (rows)")
        ax.set_ylabel("cost per batch (virtual µs)")
        ax.set_title(f"{name} {'→'.join(map(str, m['layers']))}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{directory}/crossover.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = parser("crossover", "CPU vs vGPU cost of kernel-space inference over batch sizes")
    args = p.parse_args(argv)
    with results_dir(args.out) as tmp:
        results = measure(args.quick, args.seed, args.quiet)
        write_json(tmp, results)
        write_markdown(tmp, table(results))
        plot(results, tmp)
    print(table(results))
    print(f"written to {args.out}", file=sys.stderr)
    return 0

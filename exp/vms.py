"""`malv exp vms`: guest VMs sharing one vGPU, and per-VM policy choice.

Part 1, the GPU virtualization modes.  A host with an A100 runs three guests,
each with a share of the vGPU:

* ``infer`` (share 50): a latency-critical inference service.  Requests arrive
  as a Poisson process; each launches a small model (a chain of one-wave
  kernels, high priority) and waits for it.  Its latency is arrival to done.
* ``train`` (share 30): best-effort training, big kernels back to back.
* ``switch`` (share 20): a job of its own that, halfway, switches its own CPU
  scheduling policy (`insmod mlfq`, asked of the host by hypercall).

The host puts the vGPU in one mode at a time (its GPU advisor: `gpu_timeslice`,
`gpu_mig`, `gpu_lithos`), and the run reports the inference VM's median and
P99 latency (with sample counts and bootstrap 95% intervals) and the aggregate
GPU throughput (kernels completed per virtual second, all VMs).

Part 2, per-VM policy choice.  Two guests run the same memory-hungry workload
(`exp.memory`'s ``mix`` reference string).  In a first run both keep the
kernel's default pager; in a second, ``a`` chooses `lru` and ``b`` the
learned advisor `learned_warmth`.  Only ``b``'s faults fall.

Writes results.json, results.md, latency.png, faults.png and trace.json (one
track group per VM of the lithos run: its requests, kernels and policy switch).
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Sequence
from typing import Any

from exp.memory import reference_string
from exp.output import (
    Progress,
    markdown_table,
    parser,
    pyplot,
    results_dir,
    write_json,
    write_markdown,
    write_timing,
)
from exp.sharing import write_trace
from kernel import Kernel, KernelConfig
from kernel.hypervisor import Hypervisor
from kernel.memory import PAGE_SIZE
from kernel.traps import GetTime, MemMap, MemRead, MemWrite, ModLoad, Sleep
from userland.gpulib import LaunchSpec, open_context

MODES = {"timeslice": "gpu_timeslice", "mig": "gpu_mig", "lithos": "gpu_lithos"}
SHARES = {"infer": 50, "train": 30, "switch": 20}
MODEL_KERNELS = 12  # one inference request: a chain of kernels of one wave each
MODEL = LaunchSpec("infer_layer", grid_blocks=108, block_us=80.0, mem_fraction=0.3, priority=1)
TRAIN = LaunchSpec("train_step", grid_blocks=864, block_us=500.0, mem_fraction=0.2)
SWITCH = LaunchSpec("switch_job", grid_blocks=216, block_us=200.0, mem_fraction=0.1)
BOOTSTRAP_RESAMPLES = 400


# -- what each guest runs --------------------------------------------------------------------

#: Before the measured window every guest's stream exists on the device, and
#: the device has settled: under MIG, creating the instances for the streams
#: drains the device and costs a second of downtime, as on a real GPU, and
#: an experiment serves from instances made beforehand.
SETTLE_NS = 1_500_000_000


def settle(ctx, spec: LaunchSpec):
    """Put the guest's stream on the device (one one-block kernel of
    `spec`'s priority), then wait until SETTLE_NS after `start`."""
    start = yield GetTime()
    first = LaunchSpec(f"{spec.name}_first", grid_blocks=1, block_us=1.0, priority=spec.priority)
    yield from ctx.sync((yield from ctx.launch(first)))
    now = yield GetTime()
    yield Sleep(max(0, start + SETTLE_NS - now) / 1000)


def inference(arrivals_ns: Sequence[int], out: dict[str, Any]):
    """Serve one request per arrival (in order), each a chain of MODEL_KERNELS."""

    def program(proc):
        ctx = yield from open_context(proc)
        yield from settle(ctx, MODEL)
        start = yield GetTime()
        latencies, spans = [], []
        for offset in arrivals_ns:
            arrival = start + offset
            now = yield GetTime()
            if now < arrival:
                yield Sleep((arrival - now) / 1000)
            began = yield GetTime()
            last = None
            for _ in range(MODEL_KERNELS):
                last = yield from ctx.launch(MODEL)
            done = yield from ctx.sync(last)
            latencies.append(done - arrival)
            spans.append((arrival, began, done))
        out["latencies_ns"], out["spans"] = latencies, spans
        yield from ctx.destroy()

    return program


def looping_job(spec: LaunchSpec, batch: int, duration_ns: int, out: dict[str, Any]):
    """Launch `batch` kernels of `spec` and wait for them, until `duration_ns` passed."""

    def program(proc):
        ctx = yield from open_context(proc)
        yield from settle(ctx, spec)
        start = now = yield GetTime()
        kernels, spans = 0, []
        while now - start < duration_ns:
            for _ in range(batch):
                yield from ctx.launch(spec)
            done = yield from ctx.sync()
            spans.append((now, done))
            kernels += batch
            now = yield GetTime()
        out["kernels"], out["spans"] = kernels, spans
        yield from ctx.destroy()

    return program


def switcher(duration_ns: int, out: dict[str, Any]):
    """A GPU job that switches its own VM's scheduling policy halfway."""
    job = looping_job(SWITCH, 2, duration_ns, out)

    def program(proc):
        yield Sleep((SETTLE_NS + duration_ns / 2) / 1000)
        yield ModLoad("mlfq")
        out["switched_ns"] = yield GetTime()

    return job, program


# -- part 1: one mode ---------------------------------------------------------------------------


def poisson_arrivals(rate_hz: float, duration_ns: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    t, out = 0.0, []
    while True:
        t += rng.expovariate(rate_hz) * 1e9
        if t >= duration_ns:
            return out
        out.append(int(t))


def run_mode(mode: str, duration_ns: int, rate_hz: float, seed: int) -> dict[str, Any]:
    host = Kernel(seed=seed, name="host").boot()
    try:
        host.shell(f"insmod {MODES[mode]}")
        hv = Hypervisor(host)
        host.mlaas.allow("mlfq")
        vms = {
            name: hv.create(
                name, KernelConfig(seed=seed + i + 1, gpu=None), gpu_share=share,
                allowed_modules=("mlfq",),
            ).start()
            for i, (name, share) in enumerate(SHARES.items())
        }  # fmt: skip
        outs: dict[str, dict[str, Any]] = {name: {} for name in vms}
        arrivals = poisson_arrivals(rate_hz, duration_ns, seed)
        job, switch = switcher(duration_ns, outs["switch"])
        programs = {
            "infer": [inference(arrivals, outs["infer"])],
            "train": [looping_job(TRAIN, 2, duration_ns, outs["train"])],
            "switch": [job, switch],
        }
        for name, progs in programs.items():
            kernel = vms[name].kernel
            for prog in progs:
                kernel.spawn(prog, caps={"gpu": kernel.servers["gpu"]}, name=f"{name}-work")
        start_ns = host.machine.now_ns + SETTLE_NS  # the measured window's start
        host.machine.run(until=start_ns + duration_ns * 4)
        missing = [name for name, out in outs.items() if "spans" not in out]
        if missing:
            raise RuntimeError(f"{mode}: the work of {', '.join(missing)} did not finish")
        lat = outs["infer"]["latencies_ns"]
        kernels = len(lat) * MODEL_KERNELS + outs["train"]["kernels"] + outs["switch"]["kernels"]
        end_ns = max(s[-1] for out in outs.values() for s in out["spans"])
        return {
            "mode": mode,
            "requests": len(lat),
            "p50_ms": percentile(lat, 50) / 1e6,
            "p50_ci_ms": [v / 1e6 for v in bootstrap_ci(lat, 50, seed)],
            "p99_ms": percentile(lat, 99) / 1e6,
            "p99_ci_ms": [v / 1e6 for v in bootstrap_ci(lat, 99, seed)],
            "train_kernels": outs["train"]["kernels"],
            "switch_kernels": outs["switch"]["kernels"],
            "kernels_per_s": kernels / ((end_ns - start_ns) / 1e9),
            "switched_at_ms": (outs["switch"]["switched_ns"] - start_ns) / 1e6,
            "switch_sched": vms["switch"].kernel.sched.advisor.name
            if vms["switch"].kernel.sched.advisor
            else "default",
            "others_sched": [
                vms[n].kernel.sched.advisor.name if vms[n].kernel.sched.advisor else "default"
                for n in ("infer", "train")
            ],
            "_trace": {"start_ns": start_ns, "outs": outs},
        }
    finally:
        host.machine.shutdown()


def percentile(values: Sequence[int], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1)))))
    return float(ordered[rank])


def bootstrap_ci(values: Sequence[int], q: float, seed: int) -> tuple[float, float]:
    """A 95% percentile-bootstrap interval of the q-th percentile."""
    import numpy as np

    if len(values) < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    data = np.asarray(values, dtype=np.float64)
    samples = rng.choice(data, size=(BOOTSTRAP_RESAMPLES, len(data)), replace=True)
    stats = np.percentile(samples, q, axis=1, method="closest_observation")
    low, high = np.percentile(stats, [2.5, 97.5])
    return float(low), float(high)


# -- part 2: per-VM policy choice ----------------------------------------------------------------


def memory_workload(pages: int, refs: Sequence[int], out: dict[str, Any]):
    def program(proc):
        base = yield MemMap(pages)
        for i in range(pages):
            yield MemWrite(base + i * PAGE_SIZE, b"\x01")
        out["ready"] = True
        while "go" not in out:
            yield Sleep(100)
        for page in refs:
            yield MemRead(base + page * PAGE_SIZE, 1)
        out["done"] = True

    return program


def run_choice(choices: dict[str, str | None], refs: list[int], pages: int, frames: int,
               seed: int) -> dict[str, int]:  # fmt: skip
    """Both guests run the workload; each first chooses its module (None: none).
    Returns each guest's faults over the reference string."""
    host = Kernel(seed=seed, name="host", gpu=None).boot()
    try:
        hv = Hypervisor(host)
        allowed = tuple(m for m in choices.values() if m)
        outs = {name: {} for name in choices}
        vms = {}
        for i, name in enumerate(choices):
            config = KernelConfig(seed=seed + i + 1, gpu=None, cpus=1, frames=frames)
            vms[name] = hv.create(name, config, allowed_modules=allowed).start()
            vms[name].kernel.spawn(memory_workload(pages, refs, outs[name]), name="memwork")
        host.machine.run(until=host.machine.now_ns + 10_000_000)
        while not all(out.get("ready") for out in outs.values()):
            host.machine.run(until=host.machine.now_ns + 10_000_000)
        before = {}
        for name, module in choices.items():
            if module:
                vms[name].shell(f"insmod {module}")  # the guest asks its host
            before[name] = vms[name].kernel.mm.faults
            outs[name]["go"] = True
        while not all(out.get("done") for out in outs.values()):
            host.machine.run(until=host.machine.now_ns + 100_000_000)
        return {name: vms[name].kernel.mm.faults - before[name] for name in choices}
    finally:
        host.machine.shutdown()


# -- outputs ---------------------------------------------------------------------------------


def chrome_trace(run: dict[str, Any]) -> dict:
    """One process (track group) per VM: its requests or kernels as slices."""
    start, outs = run["_trace"]["start_ns"], run["_trace"]["outs"]
    events: list[dict] = []
    for pid, name in enumerate(SHARES, start=1):
        events.append({"ph": "M", "name": "process_name", "pid": pid,
                       "args": {"name": f"vm {name} (gpu share {SHARES[name]}%)"}})  # fmt: skip
        out = outs[name]
        if name == "infer":
            for arrival, began, done in out["spans"]:
                events.append({"ph": "X", "name": "request", "pid": pid, "tid": 1,
                               "ts": (arrival - start) / 1e3, "dur": (done - arrival) / 1e3,
                               "args": {"queued_us": (began - arrival) / 1e3}})  # fmt: skip
        else:
            for began, done in out["spans"]:
                events.append({"ph": "X", "name": "kernels", "pid": pid, "tid": 1,
                               "ts": (began - start) / 1e3, "dur": (done - began) / 1e3})  # fmt: skip
        if "switched_ns" in out:
            events.append({"ph": "i", "name": "insmod mlfq", "pid": pid, "tid": 1, "s": "p",
                           "ts": (out["switched_ns"] - start) / 1e3})  # fmt: skip
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def plot_modes(path: str, modes: list[dict[str, Any]]) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = [m["mode"] for m in modes]
    p99 = [m["p99_ms"] for m in modes]
    errs = [[m["p99_ms"] - m["p99_ci_ms"][0] for m in modes],
            [m["p99_ci_ms"][1] - m["p99_ms"] for m in modes]]  # fmt: skip
    left.bar(names, p99, yerr=errs, capsize=4, color="#4c72b0")
    left.set_ylabel("inference VM P99 latency (ms)")
    left.set_title("latency-critical VM, P99 (95% CI)")
    right.bar(names, [m["kernels_per_s"] for m in modes], color="#55a868")
    right.set_ylabel("kernels per virtual second, all VMs")
    right.set_title("aggregate GPU throughput")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_faults(path: str, choice: dict[str, Any]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    vms = list(choice["default"])
    width = 0.38
    xs = range(len(vms))
    ax.bar([x - width / 2 for x in xs], [choice["default"][v] for v in vms], width,
           label="both on the default pager")  # fmt: skip
    ax.bar([x + width / 2 for x in xs], [choice["chosen"][v] for v in vms], width,
           label="a: lru, b: learned_warmth")  # fmt: skip
    ax.set_xticks(list(xs), [f"vm {v}" for v in vms])
    ax.set_ylabel("page faults over the same reference string")
    ax.set_title("each VM chooses its own memory policy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(modes: list[dict[str, Any]], choice: dict[str, Any], settings: dict) -> str:
    rows = [
        (m["mode"], m["requests"], m["p50_ms"], f"{m['p99_ms']:.3f} [{m['p99_ci_ms'][0]:.3f}, "
         f"{m['p99_ci_ms'][1]:.3f}]", m["train_kernels"], m["switch_kernels"], m["kernels_per_s"])
        for m in modes
    ]  # fmt: skip
    text = "# Guest VMs sharing one vGPU\n\n"
    text += (
        f"{settings['duration_ms']} virtual ms, inference at {settings['rate_hz']} requests/s, "
        f"shares infer {SHARES['infer']}%, train {SHARES['train']}%, switch {SHARES['switch']}%, "
        f"seed {settings['seed']}.\n\n"
    )
    text += markdown_table(
        ["mode", "requests (n)", "P50 ms", "P99 ms [95% CI]", "train kernels", "switch kernels",
         "kernels/s (all VMs)"], rows,
    )  # fmt: skip
    text += (
        "\nThe `switch` VM changed its own scheduling policy to mlfq halfway; the other VMs kept "
        "theirs ("
        + ", ".join(f"{m['mode']}: {'/'.join(m['others_sched'])}" for m in modes)
        + ").\n"
    )
    text += "\n# Per-VM policy choice\n\n"
    text += markdown_table(
        ["vm", "faults, default pager", "faults, chosen policy", "chosen"],
        [(v, choice["default"][v], choice["chosen"][v], choice["modules"][v]) for v in choice["default"]],
    )  # fmt: skip
    return text


def main(argv: list[str] | None = None) -> int:
    p = parser("vms", __doc__.split("\n\n")[0])
    p.add_argument("--modes", default=",".join(MODES), help="modes to compare (default all)")
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        print(
            f"malv exp vms: unknown mode {unknown}; choose from {', '.join(MODES)}", file=sys.stderr
        )
        return 2
    duration_ns = 200_000_000 if args.quick else 1_000_000_000
    rate_hz = 150.0
    frames = 64 if args.quick else 128
    n_refs = 3_000 if args.quick else 20_000
    progress = Progress("vms", len(modes) + 2, args.quiet)
    timing: dict[str, float] = {}
    runs = []
    for mode in modes:
        t0 = time.perf_counter()
        runs.append(run_mode(mode, duration_ns, rate_hz, args.seed))
        timing[mode] = time.perf_counter() - t0
        progress.step(mode)
    pages, refs = reference_string("mix", n_refs, frames, random.Random(args.seed))
    t0 = time.perf_counter()
    default = run_choice({"a": None, "b": None}, refs, pages, frames, args.seed)
    progress.step("default pagers")
    modules = {"a": "lru", "b": "learned_warmth"}
    chosen = run_choice(modules, refs, pages, frames, args.seed)
    progress.step("chosen policies")
    timing["choice"] = time.perf_counter() - t0
    choice = {"default": default, "chosen": chosen, "modules": modules}
    settings = {"duration_ms": duration_ns // 1_000_000, "rate_hz": rate_hz, "seed": args.seed,
                "frames": frames, "references": n_refs}  # fmt: skip
    traced = next((r for r in runs if r["mode"] == "lithos"), runs[-1])
    with results_dir(args.out) as tmp:
        write_json(tmp, {"settings": settings, "shares": SHARES,
                         "modes": [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs],
                         "choice": choice})  # fmt: skip
        write_markdown(tmp, markdown(runs, choice, settings))
        plot_modes(f"{tmp}/latency.png", runs)
        plot_faults(f"{tmp}/faults.png", choice)
        write_trace(tmp, chrome_trace(traced))
        write_timing(tmp, {"wall_s": timing}, "wall seconds: " + ", ".join(
            f"{k} {v:.1f}" for k, v in timing.items()))  # fmt: skip
    print(f"malv exp vms: results in {args.out}", file=sys.stderr)
    return 0

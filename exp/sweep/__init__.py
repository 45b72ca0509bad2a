"""`malv exp sweep`: a scenario over load, seed and slip, as curves with intervals.

    malv exp sweep [SCENARIO] --vary load=0.25:4:8 --vary seed=0:5 --policies mps,lithos

runs the cross product (`points.py`): every policy and each tenant alone at
every load and seed, and LithOS with DVFS and with right-sizing at every
slip at the Pareto load.  Points run in local processes, or on Ray with
`--ray [ADDRESS]` (`runners.py`); each is kept as it finishes
(`store.py`), so a sweep started again skips what it has.  The merged
`results.json`, `results.md` and plots (`merge.py`, `report.py`,
`plots.py`) are written to temporary names and renamed into place.

| file       | what it holds                                                   |
| ---------- | --------------------------------------------------------------- |
| axes.py    | --vary NAME=VALUES                                               |
| points.py  | the cross product: one run per point, and its key               |
| store.py   | a point's kept result, written whole                            |
| runners.py | local processes, or Ray tasks gathered with ray.wait           |
| merge.py   | curves: P99 and ratios against load, savings against slip       |
| report.py  | results.md                                                      |
| plots.py   | the plots                                                       |
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from drivers.vgpu.errors import InvalidArgument
from exp.output import Progress, positive_float, write_json, write_markdown, write_timing
from exp.scenario import load_scenario, shipped
from exp.sharing import (
    PAPER_BASELINES,
    check_inputs,
    done_message,
    duration_ns,
    parse_policies,
    safe_main,
    sharing_parser,
    warmup_ns,
)
from exp.sweep.axes import parse_vary
from exp.sweep.merge import merge, pareto
from exp.sweep.plots import plot_p99_vs_load, plot_pareto, plot_ratios_vs_load
from exp.sweep.points import MECHANISMS, setup_digest, sweep_points
from exp.sweep.report import sweep_report
from exp.sweep.runners import run_local, run_ray
from exp.sweep.store import PointStore, restore

#: The paper's baselines, the best spatial partition of ours, and LithOS;
#: `timeslice` is left out by default (slow to simulate, and not in the paper's set).
DEFAULT_POLICIES = (*PAPER_BASELINES, "mps-limit", "lithos")
DEFAULT_SCENARIO = shipped("orion-stacking")
DURATION_S = 2.0
#: What an interrupted sweep leaves (image/cli.py says it).
INTERRUPTED = "the points finished so far are kept; run the same command again to resume"


def main(argv: list[str] | None = None) -> int:
    return safe_main(_main, argv)


def sweep_parser() -> argparse.ArgumentParser:
    p = sharing_parser(
        "sweep",
        "a scenario over load, seed and slip: curves with confidence intervals",
        duration_s=DURATION_S,
        policies=DEFAULT_POLICIES,
        duration_help=f"simulated seconds per run (default: the scenario's duration_s, else "
        f"{DURATION_S:g}; quick: a fifth)",
    )
    p.add_argument("scenario", nargs="?", default=str(DEFAULT_SCENARIO),
                   help=f"scenario file (default {DEFAULT_SCENARIO.name})")  # fmt: skip
    p.add_argument("--vary", action="append", default=[], metavar="NAME=VALUES",
                   help="load=LOW:HIGH:COUNT (default 1:4:3), seed=LOW:HIGH (default "
                        "--seed, --seeds 3), slip=LIST (default 1.05,1.1,1.2)")  # fmt: skip
    p.add_argument("--mechanisms", default=",".join(MECHANISMS),
                   help="LithOS mechanisms swept over slip, or 'none' (default: all)")  # fmt: skip
    p.add_argument("--pareto-load", type=positive_float, default=1.0,
                   help="the load at which the mechanisms are swept (default 1)")  # fmt: skip
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run the points on Ray: a local one, or the cluster at ADDRESS")  # fmt: skip
    p.set_defaults(seeds=3)
    return p


def _main(argv: list[str] | None) -> int:
    args = sweep_parser().parse_args(argv)
    scenario = load_scenario(args.scenario)
    policies = parse_policies(args.policies)
    mechanisms = [] if args.mechanisms == "none" else parse_mechanisms(args.mechanisms)
    if mechanisms and "lithos" not in policies:
        policies.append("lithos")  # the mechanisms are measured against plain LithOS
    axes = parse_vary(args.vary, tuple(range(args.seed, args.seed + args.seeds)))
    pareto_load = args.pareto_load if mechanisms else None
    if pareto_load is not None and pareto_load not in axes["load"]:
        raise InvalidArgument(
            f"--pareto-load {pareto_load:g} is not one of the loads {axes['load']}"
        )
    args.default_duration_s = scenario.duration_s or DURATION_S
    check_sweep_out(args.out)
    duration = duration_ns(args)
    check_inputs(
        scenario.roles, args, axes["seed"], duration, warmup_ns(duration), min(axes["load"])
    )
    started = time.perf_counter()
    points = sweep_points(scenario, policies, axes, pareto_load, mechanisms, args, duration)
    store = PointStore(args.out, setup_digest(scenario, args, duration))
    kept = {p.name: store.load(p.name) for p in points}
    todo = [p for p in points if kept[p.name] is None]
    if len(todo) < len(points):
        print(f"malv exp sweep: resuming: {len(points) - len(todo)} of {len(points)} points "
              f"already in {store.directory}", file=sys.stderr)  # fmt: skip
    progress = Progress("sweep", len(todo), args.quiet)

    def done(i: int, result: dict) -> None:
        point = todo[i]
        store.save(point.name, result)
        kept[point.name] = result
        progress.step(f"{point.name}: {result['wall_s']:.1f} s")

    jobs = [p.job for p in todo]
    if args.ray is None:
        run_local(jobs, args.jobs, done)
    else:
        run_ray(jobs, args.ray or None, args.jobs, done)
    results = {name: restore(k) for name, k in kept.items()}
    data = merge(scenario, policies, points, results, axes)
    hp = [r.name for r in scenario.roles if r.kind != "be"]
    data["pareto_load"] = pareto_load
    data["pareto"] = pareto(points, results, pareto_load, hp) if mechanisms else []
    data["config"] = {
        "title": scenario.title, "scenario": scenario.path, "gpu": args.gpu,
        "engine": args.engine,
        "trace_dir": args.trace_dir or profiles_named(scenario), "arrivals": args.arrivals, "duration_s": duration / 1e9,
        "warmup_s": warmup_ns(duration) / 1e9, "policies": policies, "mechanisms": mechanisms,
        "points": len(points), **{name: list(values) for name, values in axes.items()},
    }  # fmt: skip
    write_outputs(args.out, data, mechanisms, time.perf_counter() - started, args.ray)
    print_summary(data)
    done_message(args.out, started)
    return 0


def profiles_named(scenario) -> str | None:
    """The profiles a scenario names by path, for results.md's head."""
    paths = [r.profile for r in scenario.roles if r.profile]
    return ", ".join(sorted({os.path.dirname(p) or "." for p in paths})) or None


def parse_mechanisms(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in MECHANISMS:
            raise InvalidArgument(f"--mechanisms: unknown {n!r}; known: {', '.join(MECHANISMS)}")
    return names


def check_sweep_out(out: str) -> None:
    """Refuse an --out that holds neither an earlier sweep nor its points."""
    path = Path(out)
    if path.exists() and (
        not path.is_dir()
        or (
            any(path.iterdir())
            and not ((path / "results.json").exists() or (path / "points").is_dir())
        )
    ):
        raise InvalidArgument(
            f"--out {out}: exists and holds no earlier sweep (results.json or points/); "
            "choose a new directory"
        )


def write_outputs(out: str, data: dict, mechanisms: list[str], wall_s: float, ray) -> None:
    """The merged results, each written whole under a temporary name, then renamed in."""
    tmp = tempfile.mkdtemp(prefix=".merge.", dir=out)
    try:
        write_json(tmp, data)
        write_markdown(tmp, sweep_report(data))
        plot_p99_vs_load(os.path.join(tmp, "p99_vs_load.png"), data)
        if "lithos" in data["config"]["policies"]:
            plot_ratios_vs_load(os.path.join(tmp, "ratio_vs_load.png"), data)
        for mechanism in mechanisms:
            plot_pareto(os.path.join(tmp, f"{mechanism}_pareto.png"), data["pareto"], mechanism)
        backend = "local processes" if ray is None else f"ray {ray or 'local'}"
        write_timing(tmp, {"total_s": round(wall_s, 3), "backend": backend},
                     f"sweep: {wall_s:.1f} s on {backend}")  # fmt: skip
        for name in sorted(os.listdir(tmp)):
            os.replace(os.path.join(tmp, name), os.path.join(out, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def print_summary(data: dict) -> None:
    hp = data["tenant"]
    for c in data["curves"]:
        if c.get("mps_vs_lithos_p99") is not None:
            lo, hi = c["mps_vs_lithos_p99_ci"]
            print(f"load {c['load']:g}: {hp} P99 MPS / LithOS {c['mps_vs_lithos_p99']:.2f}x "
                  f"[{lo:.2f}, {hi:.2f}]")  # fmt: skip
        elif c.get("mps_vs_lithos_p99_unstable"):
            print(f"load {c['load']:g}: {', '.join(c['mps_vs_lithos_p99_unstable'])} unstable")
    for r in data["pareto"]:
        print(f"{r['mechanism']} slip {r['slip']:g}: saved {100 * r['saved']:.1f}%, {hp} P99 cost "
              f"{100 * r['p99_cost'][hp]['cost']:+.1f}%, slip kept: {r['keeps_slip']}")  # fmt: skip

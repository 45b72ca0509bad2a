"""`malv exp dvfs`: LithOS with and without DVFS, per model (LithOS §6).

Each inference model runs alone on the GPU, closed loop, under `lithos` at
the maximum clock and with the DVFS governor, which sets the clock to
``f_max / (1 + slip / S)`` (slip 1.1 allows 10% slowdown), rounded up to a
clock step, for the frequency sensitivity ``S`` of the most sensitive
high-priority tenant: the share of its isolated time that scales with the
clock (`estimate="observed"` would measure each kernel's sensitivity online
and weight it by runtime, as the paper does); rate-limited because a clock
switch takes 20 ms.  Reported per model and on average: energy per request
saved, and the P99 latency and throughput cost.

`--models` names built-in models or Orion-format profiles by path;
`--scenario FILE` runs each of a scenario's tenants' models alone instead.
The notes under "Why ours differ" are written from the run's own figures.
"""

from __future__ import annotations

import sys

import numpy as np

from exp.output import markdown_table
from exp.sharing import (
    SLIP,
    plot_saving_vs_cost,
    run_variants,
    safe_main,
    setup_line,
)
from exp.sharing.notes import dvfs_notes
from exp.sharing.tables import placeholder_warning

VARIANTS = {"f_max": {}, "dvfs": {"dvfs": True, "slip": SLIP}}
PAPER = {"energy_saved": 0.26, "p99_cost": 0.07}


def summarize(figs: dict[str, dict], models: list[str]) -> dict:
    rows = {}
    for m in models:
        base, dv = figs[f"{m} f_max"], figs[f"{m} dvfs"]
        rows[m] = {
            "energy_saved": 1 - dv["energy_j_per_request"] / base["energy_j_per_request"],
            "p99_cost": dv["p99_ms"] / base["p99_ms"] - 1,
            "throughput_cost": 1 - dv["throughput_rps"] / base["throughput_rps"],
            "power_w": dv["avg_power_w"],
            "power_w_fmax": base["avg_power_w"],
            "final_clock_mhz": dv["extra"].get("final_clock_mhz"),
            "sensitivity": dv["extra"].get("sensitivity"),
            "clock_changes": dv["extra"].get("clock_changes"),
        }
    mean = {k: float(np.mean([r[k] for r in rows.values()]))
            for k in ("energy_saved", "p99_cost", "throughput_cost")}  # fmt: skip
    return {"models": rows, "mean": mean}


def report(data: dict) -> str:
    s, cfg = data["summary"], data["config"]
    rows = [
        (m, f"{100 * r['energy_saved']:.1f}%", f"{100 * r['p99_cost']:+.1f}%",
         f"{100 * r['throughput_cost']:+.1f}%", r["final_clock_mhz"],
         "-" if r["sensitivity"] is None else f"{r['sensitivity']:.2f}",
         f"{r['power_w_fmax']:.0f} -> {r['power_w']:.0f}")
        for m, r in s["models"].items()
    ]  # fmt: skip
    mean = s["mean"]
    return "\n".join([
        "# DVFS",
        "",
        *placeholder_warning(cfg["sources"]),
        f"{setup_line(cfg)}; {cfg['duration_s']:g} s per run ({cfg['warmup_s']:g} s warm-up), seeds {cfg['seeds']}; "
        f"slip {SLIP}.",
        "",
        markdown_table(("comparison", "ours (mean of models)", "paper"), [
            ("energy per request saved", f"{100 * mean['energy_saved']:.1f}%", "~26%"),
            ("P99 latency cost", f"{100 * mean['p99_cost']:+.1f}%", "~7%"),
            ("throughput cost", f"{100 * mean['throughput_cost']:+.1f}%", "-"),
        ]),
        markdown_table(("model", "energy saved", "P99 cost", "throughput cost", "clock MHz",
                        "sensitivity S", "power W"), rows),
        "## Why ours differ",
        "",
        dvfs_notes(data),
        "",
    ])  # fmt: skip


def plot(path: str, summary: dict) -> None:
    plot_saving_vs_cost(
        path, summary, "energy_saved", "energy per request saved (%)", "DVFS at slip 1.1"
    )


def main(argv: list[str] | None = None) -> int:
    return safe_main(_main, argv)


def _main(argv: list[str] | None) -> int:
    return run_variants(
        "dvfs", "LithOS with and without DVFS, per model", VARIANTS, summarize, report, plot, PAPER,
        lambda mean: (
            f"energy saved {100 * mean['energy_saved']:.1f}% at P99 cost "
            f"{100 * mean['p99_cost']:+.1f}% (paper ~26% at ~7%)"
        ),
        argv,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

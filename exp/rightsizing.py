"""`malv exp rightsizing`: LithOS with and without right-sizing, per model (LithOS §5.5).

Each inference model runs alone on the GPU, closed loop, under `lithos`
three times: giving every kernel all its quota (the whole GPU); trimmed,
where a kernel gets only the TPCs its grid can occupy; and right-sized,
where it gets the fewest TPCs on which its isolated time stays within
slip 1.1 of its time on the whole GPU (every block of a kernel takes one
isolated time, so that is its count of waves; `estimate="observed"` would
fit ``l(t) = m/t + b`` to measured latencies instead, as the paper does).
Reported per model and on average:

* capacity saved: 1 - (TPC time allocated per request, right-sized) /
  (the same without): TPC mask size times atom time, the capacity other
  tenants could be given;
* the cost: P99 request latency and throughput against the run without.

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
    predictor_line,
    run_variants,
    safe_main,
    setup_line,
)
from exp.sharing.notes import rightsizing_notes
from exp.sharing.tables import placeholder_warning

VARIANTS = {
    "full": {},
    "trimmed": {"rightsizing": True, "rightsizing_fit": False},
    "right-sized": {"rightsizing": True, "slip": SLIP},
}
PAPER = {"capacity_saved": 0.26, "cost": 0.04}


def main(argv: list[str] | None = None) -> int:
    return safe_main(_main, argv)


def summarize(figs: dict[str, dict], models: list[str]) -> dict:
    rows = {}
    for m in models:
        full, rs = figs[f"{m} full"], figs[f"{m} right-sized"]
        trim = figs[f"{m} trimmed"]
        rows[m] = {
            "capacity_saved": 1 - rs["alloc_tpc_ms_per_request"] / full["alloc_tpc_ms_per_request"],
            "trim_saved": 1 - trim["alloc_tpc_ms_per_request"] / full["alloc_tpc_ms_per_request"],
            "busy_tpc_saved": 1 - rs["busy_tpc_ms_per_request"] / full["busy_tpc_ms_per_request"],
            "p99_cost": rs["p99_ms"] / full["p99_ms"] - 1,
            "throughput_cost": 1 - rs["throughput_rps"] / full["throughput_rps"],
            "full_p99_ms": full["p99_ms"],
            "rightsized_p99_ms": rs["p99_ms"],
            "tpc_share": rs["extra"].get("rightsized_tpc_share"),
            "misprediction_rate": rs["extra"].get("misprediction_rate"),
        }
    mean = {k: float(np.mean([r[k] for r in rows.values()]))
            for k in ("capacity_saved", "trim_saved", "busy_tpc_saved", "p99_cost",
                      "throughput_cost")}  # fmt: skip
    return {"models": rows, "mean": mean}


def report(data: dict) -> str:
    s, cfg = data["summary"], data["config"]
    rows = [
        (m, f"{100 * r['capacity_saved']:.1f}%", f"{100 * r['trim_saved']:.1f}%",
         f"{100 * r['p99_cost']:+.1f}%",
         f"{100 * r['throughput_cost']:+.1f}%", f"{r['full_p99_ms']:.2f}", f"{r['rightsized_p99_ms']:.2f}")
        for m, r in s["models"].items()
    ]  # fmt: skip
    mean = s["mean"]
    return "\n".join([
        "# Right-sizing",
        "",
        *placeholder_warning(cfg["sources"]),
        f"{setup_line(cfg)}; {cfg['duration_s']:g} s per run, seeds {cfg['seeds']}; slip {SLIP}.",
        "",
        markdown_table(("comparison", "ours (mean of models)", "paper"), [
            ("TPC capacity saved", f"{100 * mean['capacity_saved']:.1f}%", "~26%"),
            ("... of which by trimming to the grid alone",
             f"{100 * mean['trim_saved']:.1f}%", "-"),
            ("P99 latency cost", f"{100 * mean['p99_cost']:+.1f}%", "~4%"),
            ("throughput cost", f"{100 * mean['throughput_cost']:+.1f}%", "-"),
        ]),
        markdown_table(("model", "capacity saved", "trimming alone", "P99 cost", "throughput cost",
                        "P99 full ms", "P99 right-sized ms"), rows),
        predictor_line({k: {"extra": [v["extra"]]} for k, v in data["runs"].items()
                        if k.endswith("right-sized")}),
        "## Why ours differ",
        "",
        rightsizing_notes(data),
        "",
    ])  # fmt: skip


def plot(path: str, summary: dict) -> None:
    plot_saving_vs_cost(
        path, summary, "capacity_saved", "TPC capacity saved (%)", "Right-sizing at slip 1.1"
    )


def _main(argv: list[str] | None) -> int:
    return run_variants(
        "rightsizing", "LithOS with and without right-sizing, per model",
        VARIANTS, summarize, report, plot, PAPER,
        lambda mean: (
            f"capacity saved {100 * mean['capacity_saved']:.1f}% at P99 cost "
            f"{100 * mean['p99_cost']:+.1f}% (paper ~26% at ~4%)"
        ),
        argv,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

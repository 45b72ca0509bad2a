"""A sweep's plots (`exp/sweep`): P99 and ratios against load, savings against cost.

Unstable points (a queue that does not drain) are drawn hollow and crossed
out: their latency measures the run's length.  Every axis says its unit.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from exp.output import pyplot
from exp.sweep.report import RATIOS

#: The paper's operating points: (P99 cost %, saved %).
PAPER_POINTS = {"dvfs": (7.0, 26.0), "rightsizing": (4.0, 26.0)}
SAVED_LABEL = {
    "dvfs": "energy per unit of work saved (%)",
    "rightsizing": "TPC capacity per unit of work saved (%)",
}


def _errors(values: list[float], cis: list[list[float] | None]) -> np.ndarray:
    """Asymmetric error bars from intervals (0 where there is none)."""
    lo = [v - c[0] if c and not math.isnan(c[0]) else 0.0 for v, c in zip(values, cis, strict=True)]
    hi = [c[1] - v if c and not math.isnan(c[1]) else 0.0 for v, c in zip(values, cis, strict=True)]
    return np.maximum(0.0, np.array([lo, hi]))


def _load_axis(ax, loads: list[float]) -> None:
    """A log axis of loads, ticked at the sweep's loads in plain numbers."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    ax.set_xticks(sorted(set(loads)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("load (x the scenario's open-loop arrival rate)")


def plot_p99_vs_load(path: str, data: dict[str, Any]) -> None:
    plt = pyplot()
    hp = data["tenant"]
    rows = [r for r in data["records"] if r["tenant"] == hp]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for policy in dict.fromkeys(r["policy"] for r in rows):
        mine = [r for r in rows if r["policy"] == policy]
        loads = [r["load"] for r in mine]
        p99 = [r["p99_ms"] for r in mine]
        style = {"color": "black", "linewidth": 2.5} if policy == "lithos" else {}
        line = ax.errorbar(loads, p99, _errors(p99, [r["p99_ci_ms"] for r in mine]),
                           marker="o", capsize=3, label=policy, **style)  # fmt: skip
        bad = [(x, y) for x, y, r in zip(loads, p99, mine, strict=True) if r["unstable"]]
        if bad:
            ax.scatter(*zip(*bad, strict=True), marker="X", s=90, color=line[0].get_color(),
                       edgecolors="red", zorder=5)  # fmt: skip
    _load_axis(ax, [r["load"] for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel(f"{hp} P99 latency (ms), 95% CI")
    ax.set_title(f"{hp} tail latency against load (X: queue does not drain)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_ratios_vs_load(path: str, data: dict[str, Any]) -> None:
    plt = pyplot()
    curves = data["curves"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, what in RATIOS:
        points = [(c["load"], c[key], c[f"{key}_ci"]) for c in curves if c.get(key) is not None]
        if points:
            loads, values, cis = zip(*points, strict=True)
            ax.errorbar(loads, values, _errors(list(values), list(cis)), marker="o", capsize=3,
                        label=what)  # fmt: skip
        for c in curves:
            if c.get(f"{key}_unstable"):
                ax.axvline(c["load"], color="red", alpha=0.25, linewidth=6)
                ax.annotate(f"{', '.join(c[f'{key}_unstable'])} unstable: no ratio",
                            (c["load"], 1), rotation=90, fontsize=7, va="bottom")  # fmt: skip
    ax.axhline(1, color="gray", linewidth=0.8)
    ax.axhline(13, color="tab:blue", linestyle=":", label="paper: MPS / LithOS 13x")
    ax.axhspan(3, 4, color="tab:orange", alpha=0.15, label="paper: best baseline / LithOS 3-4x")
    _load_axis(ax, [c["load"] for c in curves])
    ax.set_yscale("log")
    ax.set_ylabel(f"{data['tenant']} P99 ratio (x), 95% CI")
    ax.set_title("How much lower LithOS's tail is, against load")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_pareto(path: str, rows: list[dict], mechanism: str) -> None:
    """Saving against each high-priority tenant's P99 cost, one point per
    slip; a point right of its slip's dotted line (ringed red) breaks it."""
    plt = pyplot()
    mine = [r for r in rows if r["mechanism"] == mechanism]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    saved = [100 * r["saved"] for r in mine]
    for k, tenant in enumerate(mine[0]["p99_cost"]):
        cost = [100 * r["p99_cost"][tenant]["cost"] for r in mine]
        cis = [[100 * v for v in r["p99_cost"][tenant]["ci"]] for r in mine]
        ax.errorbar(cost, saved, xerr=_errors(cost, cis), marker="os^"[k % 3], capsize=3,
                    label=f"{tenant} P99 cost")  # fmt: skip
        broken = [(x, y) for x, y, r in zip(cost, saved, mine, strict=True)
                  if x > 100 * (r["slip"] - 1)]  # fmt: skip
        if broken:
            ax.scatter(*zip(*broken, strict=True), s=160, facecolors="none", edgecolors="red",
                       zorder=5)  # fmt: skip
    # Each slip is labelled once, on its bound, not at every tenant's point
    # (the points of one slip sit close together and their labels overlapped).
    for slip in sorted({r["slip"] for r in mine}):
        ax.axvline(100 * (slip - 1), color="gray", linestyle=":", linewidth=0.8)
        ax.text(100 * (slip - 1), 0.98, f" slip {slip:g}", transform=ax.get_xaxis_transform(),
                rotation=90, va="top", ha="right", fontsize=7, color="dimgray")  # fmt: skip
    px, py = PAPER_POINTS[mechanism]
    ax.scatter([px], [py], marker="*", s=200, color="tab:red", label=f"paper ({py:g}% at {px:g}%)")
    ax.set_xlabel("P99 latency cost against plain LithOS (%), 95% CI")
    ax.set_ylabel(SAVED_LABEL[mechanism])
    ax.set_title(f"{mechanism} over slip at load {mine[0]['load']:g} "
                 "(dotted: each slip's bound; ringed: broken)")  # fmt: skip
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

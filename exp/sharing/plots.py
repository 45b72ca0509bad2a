"""The sharing experiments' plots (`exp/sharing`): latency CDFs, bars, TPC allocation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from drivers.vgpu.sharing import RunResult
from exp.output import pyplot
from exp.sharing.catalogue import MS


def plot_latency_cdf(
    path: str, by_policy: dict[str, list[RunResult]], tenants: Sequence[int], names: Sequence[str]
) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(tenants), figsize=(5.5 * len(tenants), 4), squeeze=False)
    for ax, index in zip(axes[0], tenants, strict=True):
        for label, runs in by_policy.items():
            lat = np.sort(
                np.concatenate([np.asarray(r.streams[index].latencies_ns, float) for r in runs])
            )
            if len(lat):
                style = {"color": "black", "linewidth": 2.5} if label.startswith("lithos") else {}
                ax.plot(lat / MS, np.arange(1, len(lat) + 1) / len(lat), label=label, **style)
        ax.set_xscale("log")
        ax.set_xlabel("request latency (ms)")
        ax.set_ylabel("CDF")
        ax.set_title(names[index])
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_bars(path: str, rows: list[dict], metrics: Sequence[tuple[str, str]]) -> None:
    """Grouped bars: for each metric, one group per policy, one bar per tenant."""
    plt = pyplot()
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    tenants = list(dict.fromkeys(r["tenant"] for r in rows))
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False)
    width = 0.8 / max(1, len(tenants))
    for ax, (key, title) in zip(axes[0], metrics, strict=True):
        for k, tenant in enumerate(tenants):
            values = []
            for p in policies:
                v = next(
                    (r.get(key) for r in rows if r["policy"] == p and r["tenant"] == tenant), None
                )
                values.append(float("nan") if v is None else v)
            ax.bar(np.arange(len(policies)) + k * width, values, width, label=tenant)
        ax.set_xticks(np.arange(len(policies)) + width * (len(tenants) - 1) / 2)
        ax.set_xticklabels(policies, rotation=45, ha="right", fontsize=8)
        ax.set_title(title)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_allocation(path: str, run: RunResult, names: Sequence[str], span_ns: int) -> None:
    """TPCs in use per tenant over time (stacked), over the first `span_ns` of samples."""
    plt = pyplot()
    samples = [(t, c) for t, c in run.allocation if t >= run.allocation[0][0]]
    if not samples:
        return
    t0 = samples[0][0]
    samples = [(t, c) for t, c in samples if t - t0 <= span_ns]
    times = np.array([t for t, _ in samples]) / MS
    counts = np.array([c for _, c in samples]).T
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.stackplot(times, counts, labels=names, step="post")
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("TPCs in its atoms' masks")
    ax.set_title(f"TPC allocation under {run.policy}")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_saving_vs_cost(
    path: str, summary: dict, saved_key: str, saved_label: str, title: str
) -> None:
    """Per model, what a LithOS mechanism saves beside what it costs in P99
    (the right-sizing and DVFS experiments' plot)."""
    plt = pyplot()
    models = list(summary["models"])
    saved = [100 * summary["models"][m][saved_key] for m in models]
    cost = [100 * summary["models"][m]["p99_cost"] for m in models]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(len(models))
    ax.bar(x - 0.2, saved, 0.4, label=saved_label)
    ax.bar(x + 0.2, cost, 0.4, label="P99 latency cost (%)")
    ax.set_xticks(x)
    ax.set_xticklabels(models, rotation=20)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

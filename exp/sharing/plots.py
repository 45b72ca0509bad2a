"""The sharing experiments' plots (`exp/sharing`): latency CDFs, bars, TPC allocation.

Every axis says what it counts and in which unit."""

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
            mine = [next(r for r in rows if r["policy"] == p and r["tenant"] == tenant)
                    for p in policies]  # fmt: skip
            values = [float("nan") if r.get(key) is None else r[key] for r in mine]
            # Percentiles carry their bootstrap interval (`p99_ms` -> `p99_ci_ms`).
            cis = [r.get(key.replace("_ms", "_ci_ms")) for r in mine] if key.endswith("_ms") else []
            err = None
            if cis and all(c is not None for c in cis):
                err = np.maximum(0, [[v - c[0] for v, c in zip(values, cis, strict=True)],
                                     [c[1] - v for v, c in zip(values, cis, strict=True)]])  # fmt: skip
            ax.bar(np.arange(len(policies)) + k * width, values, width, yerr=err, capsize=2,
                   label=tenant)  # fmt: skip
        ax.set_xticks(np.arange(len(policies)) + width * (len(tenants) - 1) / 2)
        ax.set_xticklabels(policies, rotation=45, ha="right", fontsize=8)
        ax.set_xlabel("policy")
        ax.set_ylabel(title)
        ax.set_title(title)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_allocation(
    path: str, run: RunResult, names: Sequence[str], span_ns: int, n_tpcs: int
) -> None:
    """The device's TPCs over time: each tenant's own and stolen, stacked.

    At each sample every TPC counts once: for the tenant whose own atom's
    mask holds it, else for a tenant whose stolen atom's mask holds it, else
    idle; so the stack never exceeds the device's `n_tpcs`."""
    plt = pyplot()
    atoms = run.atoms
    if not atoms:
        return
    t0 = min(a.launch_ns for a in atoms)
    times = np.arange(t0, min(t0 + span_ns, max(a.done_ns for a in atoms)), SAMPLE_STEP_NS)
    held = np.zeros((len(names), 2, len(times)), dtype=object)  # [tenant, own/stolen, t] masks
    for a in atoms:
        first, last = np.searchsorted(times, [a.launch_ns, a.done_ns])
        for i in range(first, last):
            held[a.stream, int(a.stolen), i] |= a.mask
    counts = np.zeros((len(names), 2, len(times)))
    for i in range(len(times)):
        claimed = 0
        for stolen in (0, 1):  # owners first: a TPC in both masks is its owner's
            for s in range(len(names)):
                mine = int(held[s, stolen, i]) & ~claimed
                counts[s, stolen, i] = mine.bit_count()
                claimed |= mine
    fig, ax = plt.subplots(figsize=(9, 3.8))
    layers, labels, colours, hatches = [], [], [], []
    for s, name in enumerate(names):
        for stolen, what in ((0, "own"), (1, "stolen")):
            layers.append(counts[s, stolen])
            labels.append(f"{name} ({what})")
            colours.append(f"C{s}")
            hatches.append("//" if stolen else "")
    polys = ax.stackplot((times - t0) / MS, layers, labels=labels, colors=colours, step="post")
    for poly, hatch in zip(polys, hatches, strict=True):
        poly.set_hatch(hatch)
        poly.set_alpha(0.6 if hatch else 0.9)
    ax.axhline(n_tpcs, color="black", linewidth=1, linestyle="--")
    ax.set_ylim(0, n_tpcs * 1.15)
    ax.annotate(f"device: {n_tpcs} TPCs", (0, n_tpcs), xytext=(2, 3), textcoords="offset points",
                fontsize=8)  # fmt: skip
    ax.set_xlabel("time from the trace's start (ms)")
    ax.set_ylabel("TPCs (count)")
    ax.set_title(f"TPCs each tenant's atoms hold under {run.policy}: own and stolen")
    ax.legend(loc="upper right", fontsize=7, ncol=len(names))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


#: The TPC timeline's sample step.
SAMPLE_STEP_NS = 50_000


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
    ax.set_xlabel("model")
    ax.set_ylabel("% of the run without the mechanism")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

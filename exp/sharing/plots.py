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
    from matplotlib import ticker

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
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel("request latency (ms)")
        ax.set_ylabel("CDF")
        ax.set_title(names[index])
        ax.grid(True, which="both", alpha=0.3)
    # The legend stands beside the axes, never over the curves.
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5),
               title="policy")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_bars(path: str, rows: list[dict], metrics: Sequence[tuple[str, str]]) -> None:
    """Grouped bars: for each metric, one group per policy, one bar per tenant.

    Latencies (`*_ms`) are on a log axis, so that one queue that does not
    drain, whose latency grows with the run, hides no other bar; such a
    tenant's bars are hatched and edged in red ("unstable")."""
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
            bounds = [c for c in cis if c is not None]
            if bounds and len(bounds) == len(cis):
                err = np.maximum(0, [[v - c[0] for v, c in zip(values, bounds, strict=True)],
                                     [c[1] - v for v, c in zip(values, bounds, strict=True)]])  # fmt: skip
            bars = ax.bar(np.arange(len(policies)) + k * width, values, width, yerr=err,
                          capsize=2, label=tenant, color=f"C{k}")  # fmt: skip
            for bar, r in zip(bars, mine, strict=True):
                if r.get("unstable"):
                    bar.set_hatch("xx")
                    bar.set_edgecolor("red")
        if key.endswith("_ms"):
            ax.set_yscale("log")
        ax.set_xticks(np.arange(len(policies)) + width * (len(tenants) - 1) / 2)
        ax.set_xticklabels(policies, rotation=45, ha="right", fontsize=8)
        ax.set_xlabel("policy")
        ax.set_ylabel(title)
        ax.set_title(title)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    from matplotlib.patches import Patch

    # Plain patches: a tenant's first bar may be hatched, its legend entry never.
    handles = [Patch(facecolor=f"C{k}") for k in range(len(tenants))]
    labels = list(tenants)
    if any(r.get("unstable") for r in rows):
        handles.append(Patch(facecolor="white", edgecolor="red", hatch="xx"))
        labels.append("unstable (queue does not drain)")
    fig.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_allocation(
    path: str, run: RunResult, names: Sequence[str], span_ns: int, n_tpcs: int
) -> None:
    """The device's TPCs over the recorded `span_ns`: each tenant's own and
    stolen, stacked: sampled every 50 us, then averaged over at most `BINS`
    equal bins (a long window's instants would alias).

    At each sample every TPC counts once: for the tenant whose own atom's
    mask holds it, else for a tenant whose stolen atom's mask holds it, else
    idle; so the stack never exceeds the device's `n_tpcs`."""
    plt = pyplot()
    atoms = run.atoms
    if not atoms:
        return
    t0 = min(a.launch_ns for a in atoms)
    end = min(t0 + span_ns, max(a.done_ns for a in atoms))
    times = np.arange(t0, end, SAMPLE_STEP_NS)
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
    per_bin = max(1, -(-len(times) // BINS))
    usable = len(times) // per_bin * per_bin
    if per_bin > 1 and usable:
        times = times[:usable:per_bin]
        counts = counts[:, :, :usable].reshape(len(names), 2, -1, per_bin).mean(axis=3)
    step = SAMPLE_STEP_NS * per_bin
    fig, ax = plt.subplots(figsize=(12, 3.8))
    layers, labels, colours, hatches = [], [], [], []
    for s, name in enumerate(names):
        for stolen, what in ((0, "own"), (1, "stolen")):
            layers.append(counts[s, stolen])
            labels.append(f"{name} ({what})")
            colours.append(f"C{s}")
            hatches.append("//" if stolen else "")
    polys = ax.stackplot((times - t0) / MS, layers, labels=labels, colors=colours, step="post",
                         linewidth=0)  # fmt: skip
    for poly, hatch in zip(polys, hatches, strict=True):
        poly.set_hatch(hatch)
        poly.set_alpha(0.6 if hatch else 0.9)
    ax.axhline(n_tpcs, color="black", linewidth=1, linestyle="--")
    ax.set_ylim(0, n_tpcs * 1.15)
    ax.annotate(f"device: {n_tpcs} TPCs", (0, n_tpcs), xytext=(2, 3), textcoords="offset points",
                fontsize=8)  # fmt: skip
    ax.set_xlabel(f"time from the first request after the warm-up (ms); mean over "
                  f"{step / 1e3:g} us bins")  # fmt: skip
    ax.set_ylabel("TPCs held (mean count)")
    ax.set_title(f"TPCs each tenant's atoms hold under {run.policy}: own and stolen, "
                 f"{(end - t0) / MS:.0f} ms of the run")  # fmt: skip
    ax.legend(loc="upper right", fontsize=7, ncol=len(names))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


#: The TPC timeline's sample step, and the most bins it is averaged into.
SAMPLE_STEP_NS = 50_000
BINS = 1000


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
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))  # beside the bars
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)

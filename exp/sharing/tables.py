"""The sharing experiments' results.md (`exp/sharing`): tables and the comparison rows."""

from __future__ import annotations

import math
from collections.abc import Sequence

from exp.output import markdown_table
from exp.sharing.figures import fmt
from exp.sharing.options import P99_SAMPLES


def records_table(data: dict) -> str:
    rows = []
    for r in data["records"]:
        slo = "-" if r["slo_attainment"] is None else f"{100 * r['slo_attainment']:.1f}%"
        rows.append(
            (
                r["policy"],
                r["tenant"],
                r["requests"],
                f"{r['p50_ms']:.2f}",
                f"{r['p95_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                interval(r["p99_ci_ms"]),
                f"{r['p99_vs_isolated']:.2f}",
                slo,
                f"{r['throughput_rps']:.1f}",
                f"{r['tpc_seconds']:.2f}",
                f"{r['energy_j']:.0f}",
                f"{r['avg_power_w']:.0f}",
                queue_state(r),
            )  # fmt: skip
        )
    columns = ("policy", "tenant", "requests", "p50 ms", "p95 ms", "p99 ms", "p99 95% CI",
               "p99/isolated", "SLO met", "req/s", "TPC-s", "energy J", "power W",
               "queue")  # fmt: skip
    return markdown_table(columns, rows) + THIN_NOTE


THIN_NOTE = (
    f"\nA P99 from fewer than {P99_SAMPLES} requests (*thin*) rests on fewer than one request "
    "in its tail.  A queue that does not drain (*unstable*: at the window's end it still holds "
    "more than a tenth of the window's requests) has no steady-state latency: its percentiles "
    "grow with the run's length, and no ratio of them is a speed-up.\n\n"
)


def interval(ci: list[float] | None, unit: str = "") -> str:
    """A bootstrap interval as `[lo, hi]`."""
    if ci is None or any(math.isnan(v) for v in ci):
        return "n/a"
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]{unit}"


def queue_state(r: dict) -> str:
    if r.get("unstable"):
        return f"unstable ({r['unfinished']} left)"
    if r["requests"] < P99_SAMPLES:
        return "thin"
    return "drains" if r["kind"] == "open" else "-"


def colocation_report(
    data: dict, title: str, rows: Sequence[tuple[str, str, str, str]], notes: str
) -> str:
    """results.md: the comparison against the paper, the table of every record, the notes."""
    cfg = data["config"]
    lines = [
        f"# {title}",
        "",
        f"{setup_line(cfg)}; "
        f"arrivals: {cfg['arrivals']}; {cfg['duration_s']:g} s simulated per run "
        f"({cfg['warmup_s']:g} s warm-up not measured); seeds {cfg['seeds']}.",
        "",
        "Tenants: "
        + "; ".join(
            f"{t['name']} = {t['model']} ({t['kind']}, quota {t['quota']:.3f})"
            for t in cfg["tenants"]
        )
        + f".  SLO: {cfg['slo_factor']:g}x the model's isolated request time.",
        "",
        "## Against the paper",
        "",
        markdown_table(("comparison", "ours", "paper", "target"), rows),
        "## Every policy and tenant",
        "",
        records_table(data),
        "Isolated (each tenant alone on the whole GPU):",
        "",
        markdown_table(
            ("tenant", "p50 ms", "p99 ms", "req/s"),
            [
                (
                    r["tenant"],
                    f"{r['p50_ms']:.2f}",
                    f"{r['p99_ms']:.2f}",
                    f"{r['throughput_rps']:.1f}",
                )
                for r in data["isolated"]
            ],  # fmt: skip
        ),
        predictor_line(data["runs"]),
        "## Why ours differ",
        "",
        notes.strip(),
        "",
    ]
    return "\n".join(lines)


def predictor_line(runs: dict) -> str:
    """LithOS's latency predictor: mispredictions (error over 50 us) over the atoms it predicted."""
    extras = [e for label, r in runs.items() if label.startswith("lithos") for e in r["extra"]]
    predicted = sum(e.get("predictions", 0) for e in extras)
    if not predicted:
        return ""
    wrong = sum(e["misprediction_rate"] * e["predictions"] for e in extras)
    error = sum(e["mean_abs_error_us"] * e["predictions"] for e in extras) / predicted
    return (
        f"LithOS's latency predictor: {100 * wrong / predicted:.2f}% of {predicted} predicted atoms "
        f"mispredicted (error over 50 us); mean absolute error {error:.1f} us.\n"
    )


def setup_line(cfg: dict) -> str:
    """The GPU and the kernel profiles a run used, for the head of results.md."""
    return f"GPU {cfg['gpu']}; kernel profiles: {cfg['trace_dir'] or 'built-in synthetic models'}"


def colocation_rows(
    c: dict, paper: dict[str, str], targets: dict[str, str]
) -> list[tuple[str, str, str, str]]:
    """The stacking and hybrid comparisons with the paper: (what, ours, paper, target)."""
    if "lithos_p99_ms" not in c:
        return []

    def row(what: str, key: str) -> tuple[str, str, str, str]:
        return (what, ratio_text(c, key), paper.get(key, "-"), targets.get(key, "-"))

    hp = c["tenant"]
    rows = [row(f"{hp} P99, LithOS vs isolated", "lithos_vs_isolated_p99")]
    if "mps_vs_lithos_p99" in c:
        rows.insert(0, row(f"{hp} P99, MPS / LithOS", "mps_vs_lithos_p99"))
    for key, what in (("best_baseline", "best of the paper's baselines"),
                      ("best_other", "best of all other policies")):  # fmt: skip
        if key in c:
            rows += [
                row(f"{hp} P99, {what} ({c[key]}) / LithOS", f"{key}_vs_lithos_p99"),
                row(f"aggregate throughput, LithOS / {c[key]}", f"lithos_vs_{key}_throughput"),
            ]
    return rows


def ratio_text(c: dict, key: str) -> str:
    """A ratio with its interval, or why there is none (a queue that does not drain)."""
    if c.get(f"{key}_unstable"):
        return f"none: {', '.join(c[f'{key}_unstable'])} unstable"
    ci = c.get(f"{key}_ci")
    return f"{fmt(c[key])}x" + (f" {interval(ci)}" if ci is not None else "")

"""The sharing experiments' results.md (`exp/sharing`): tables and the comparison rows."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from exp.output import markdown_table
from exp.sharing.catalogue import CATALOGUE
from exp.sharing.figures import fmt
from exp.sharing.notes import colocation_notes
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


def colocation_report(data: dict, title: str, rows: Sequence[tuple[str, str, str, str]]) -> str:
    """results.md: the comparison against the paper, the table of every record,
    and the notes, written from the run's own figures (`exp.sharing.notes`)."""
    cfg = data["config"]
    lines = [
        f"# {title}",
        "",
        *placeholder_warning(cfg["tenants"]),
        f"{setup_line(cfg)}.",
        "",
        f"Arrivals: {cfg['arrivals']}; {cfg['duration_s']:g} s simulated per run "
        f"({cfg['warmup_s']:g} s warm-up not measured); seeds {cfg['seeds']}.",
        "",
        "Tenants: "
        + "; ".join(
            f"{t['name']} = {model_label(t)}{' (PLACEHOLDER)' if t.get('placeholder') else ''} "
            f"({t['kind']}, quota {t['quota']:.3f})"
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
        colocation_notes(data),
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
    """The GPU simulated and, per tenant (or model), its kernel profile and the
    GPU it was measured on, for the head of results.md.  A config without
    tenants (a sweep's) names its profiles' directory."""
    tenants = cfg.get("tenants") or cfg.get("sources")
    gpu = cfg.get("simulated_on", cfg["gpu"])
    if not tenants:
        return f"GPU {gpu}; kernel profiles: {cfg['trace_dir'] or 'built-in synthetic models'}"
    sources = "; ".join(
        profile_source(t, cfg) if t["name"] in (t["model"], _stem(t)) else
        f"{t['name']}: {profile_source(t, cfg)}"
        for t in tenants
    )  # fmt: skip
    return f"GPU simulated: {gpu}; kernel profiles: {sources}"


def _stem(t: dict) -> str:
    return os.path.splitext(os.path.basename(t["profile"]))[0] if t.get("profile") else ""


def model_label(t: dict) -> str:
    """A tenant's model as a table names it: the profile's file name, or the catalogue key."""
    return os.path.basename(t["profile"]) if t.get("profile") else t["model"]


def profile_source(t: dict, cfg: dict) -> str:
    """Where a tenant's kernel durations come from, and from which GPU."""
    gpu = cfg.get("simulated_on", cfg["gpu"])
    measured = t.get("measured_on") or gpu
    carried = f", carried to the {gpu}" if measured != gpu else ""
    if t.get("profile"):
        return f"{t['profile']} (measured on the {measured}{carried})"
    if cfg.get("trace_dir"):
        path = os.path.join(cfg["trace_dir"], f"{CATALOGUE[t['model']][0]}.csv")
        return f"{path} (measured on the {measured}{carried})"
    drawn = f"as measured on the {measured}{carried}" if carried else f"drawn for the {gpu}"
    return f"{t['model']} (built-in synthetic model, {drawn})"


def placeholder_warning(tenants: Sequence[dict]) -> list[str]:
    """A warning at the head of results.md for every placeholder profile run."""
    marked = [t for t in tenants if t.get("placeholder")]
    if not marked:
        return []
    return [
        "**Placeholder profiles (run with --allow-placeholder): their latencies are not "
        "measurements.** " + " ".join(f"{t['name']}: {t['placeholder']}" for t in marked),
        "",
    ]


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

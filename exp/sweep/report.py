"""A sweep's results.md (`exp/sweep`): its curves as tables."""

from __future__ import annotations

from typing import Any

from exp.output import markdown_table
from exp.sharing.tables import interval, queue_state, ratio_text, setup_line

RATIOS = (
    ("mps_vs_lithos_p99", "MPS / LithOS"),
    ("best_baseline_vs_lithos_p99", "best paper baseline / LithOS"),
    ("best_other_vs_lithos_p99", "best of all policies / LithOS"),
)


def sweep_report(data: dict[str, Any]) -> str:
    cfg, hp = data["config"], data["tenant"]
    lines = [
        f"# Sweep: {cfg['title']}",
        "",
        f"Scenario {cfg['scenario']}; {setup_line(cfg)}; {cfg['duration_s']:g} s per run "
        f"({cfg['warmup_s']:g} s warm-up); loads {list(cfg['load'])} (times each open-loop "
        f"tenant's rate); seeds {list(cfg['seed'])}, pooled; {cfg['points']} points.",
        "",
        f"## {hp} P99 against load",
        "",
        markdown_table(
            ("load", "policy", "requests", "p99 ms", "p99 95% CI", "queue"),
            [
                (
                    f"{r['load']:g}",
                    r["policy"],
                    r["requests"],
                    f"{r['p99_ms']:.2f}",
                    interval(r["p99_ci_ms"]),
                    queue_state(r),
                )
                for r in data["records"]
                if r["tenant"] == hp
            ],  # fmt: skip
        ),
        f"## LithOS's {hp} P99 against the others (95% CI, paired bootstrap)",
        "",
        "The paper's baselines are MPS, MIG, stream priority, TGS, REEF and Orion; the second "
        "comparison takes every other policy of ours as well.  A ratio is left out where a "
        "queue does not drain.",
        "",
        markdown_table(
            ("load", *(what for _, what in RATIOS), "best baseline", "best of all"),
            [
                (
                    f"{c['load']:g}",
                    *(ratio_text(c, k) if k in c else "-" for k, _ in RATIOS),
                    c.get("best_baseline", "-"),
                    c.get("best_other", "-"),
                )
                for c in data["curves"]
            ],  # fmt: skip
        ),
    ]
    if data["pareto"]:
        lines += pareto_section(data["pareto"], data["pareto_load"])
    return "\n".join(lines)


def pareto_section(rows: list[dict], load: float) -> list[str]:
    tenants = list(rows[0]["p99_cost"])
    table = []
    for r in rows:
        costs = [
            f"{100 * c['cost']:+.1f}% [{100 * c['ci'][0]:+.1f}, {100 * c['ci'][1]:+.1f}]"
            for c in r["p99_cost"].values()
        ]
        kept = "yes" if r["keeps_slip"] else f"no ({', '.join(r['broken_by'])})"
        table.append((r["mechanism"], f"{r['slip']:g}", f"{100 * r['saved']:.1f}%", *costs, kept))
    return [
        f"## DVFS and right-sizing against their slip (load {load:g})",
        "",
        "Saved: energy (DVFS) or allocated TPC time (right-sizing) per second of work (each "
        "tenant's completed requests times its isolated request time), against plain LithOS.  "
        "Cost: each high-priority tenant's P99 against plain LithOS, with its 95% interval.  "
        "The slip is kept when no tenant's P99 cost exceeds slip - 1.  Paper: DVFS ~26% energy "
        "at ~7% P99; right-sizing ~26% capacity at ~4%.",
        "",
        markdown_table(
            ("mechanism", "slip", "saved", *(f"{t} P99 cost" for t in tenants), "keeps slip"),
            table,
        ),
    ]

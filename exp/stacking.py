"""`malv exp stacking`: LithOS inference stacking, every sharing policy side by side.

Three inference tenants share an A100 (LithOS §7, "inference stacking"):

* HP A, ResNet-50 (batch 4): a latency-critical service, open loop, with
  Poisson arrivals at Orion's trace rate or the `--arrivals` trace, and an
  SLO of twice its isolated request time;
* HP B, ResNet-101 (batch 4): a closed-loop inference job;
* BE, BERT (batch 2): a best-effort closed-loop job.

The spatial policies split the GPU the same way (MIG slices, MPS thread
percentages, LithOS TPC quotas): HP A gets the fewest TPCs on which its
isolated request time stays within LithOS's slip of 1.1 (33 of 54 for the
Orion ResNet-50 profile), HP B and BE share the rest 2:1 (on MIG: 4g+2g+1g).  Each tenant also runs alone on the whole GPU: its isolated
latency and throughput are the reference.  Reported against the paper:
HP A's P99 under LithOS vs MPS, vs isolated, and vs the best other policy,
with the aggregate throughput (each tenant's throughput over its isolated
throughput, summed).
"""

from __future__ import annotations

import sys

from drivers.vgpu.policies import POLICY_NAMES
from exp.scenario import load_scenario, scenario_option, shipped
from exp.sharing import (
    colocation_rows,
    parse_policies,
    run_colocation,
    safe_main,
    sharing_parser,
)

#: The tenants, from the shipped scenario exp/scenarios/stacking.toml.
ROLES = load_scenario(shipped("stacking")).roles
PAPER = {
    "mps_vs_lithos_p99": "13x",
    "best_baseline_vs_lithos_p99": "3-4x",
    "lithos_vs_best_baseline_throughput": "1.3-1.6x",
}


def comparison_rows(c: dict) -> list[tuple[str, str, str, str]]:
    return colocation_rows(
        c, PAPER, {"mps_vs_lithos_p99": ">= 5x", "lithos_vs_isolated_p99": "<= 1.3x"}
    )


def main(argv: list[str] | None = None) -> int:
    return safe_main(_main, argv)


def _main(argv: list[str] | None) -> int:
    p = sharing_parser(
        "stacking",
        "inference stacking: HP A (open loop), HP B (closed loop) and BE under each policy",
        duration_s=10.0,
        policies=POLICY_NAMES,
    )
    scenario_option(p, "stacking")
    args = p.parse_args(argv)
    policies = parse_policies(args.policies)
    scenario = load_scenario(args.scenario)
    return run_colocation(
        "stacking", scenario.title, scenario.roles, policies, args, PAPER, comparison_rows
    )


if __name__ == "__main__":
    sys.exit(main())

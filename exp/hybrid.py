"""`malv exp hybrid`: inference beside training (LithOS §7, "hybrid stacking").

A latency-critical ResNet-50 inference service (HP A: open loop, Poisson or
`--arrivals`, SLO of twice its isolated request time) shares the A100 with a
best-effort training job (`--training`: ResNet-50, batch 32, by default, or
BERT, batch 8), as the shipped scenario `exp/scenarios/hybrid.toml` names
them (`--scenario FILE` runs any other), whose host runs ahead of the GPU as a training loop does.
HP A's quota follows LithOS's slip rule (the fewest TPCs within 1.1x of its
isolated request time); training gets the rest.  Reported against the
paper: HP A's P99 under LithOS vs MPS and vs isolated.
"""

from __future__ import annotations

import sys

import attrs

from drivers.vgpu.policies import POLICY_NAMES
from exp.scenario import load_scenario, scenario_option
from exp.sharing import (
    colocation_rows,
    parse_policies,
    run_colocation,
    safe_main,
    sharing_parser,
)

TRAINING = {"resnet50": "resnet50_train", "bert": "bert_train"}
PAPER = {"mps_vs_lithos_p99": "4.7x", "lithos_vs_isolated_p99": "1.19x"}
#: The paper's figures for the table's other rows (not in results.json's "paper").
ROW_PAPER = {
    **PAPER,
    "best_baseline_vs_lithos_p99": "1.18x",
    "lithos_vs_best_baseline_throughput": "1.35x",
}


def comparison_rows(c: dict) -> list[tuple[str, str, str, str]]:
    return colocation_rows(c, ROW_PAPER, {})


def main(argv: list[str] | None = None) -> int:
    return safe_main(_main, argv)


def _main(argv: list[str] | None) -> int:
    p = sharing_parser(
        "hybrid",
        "hybrid stacking: a ResNet-50 inference service beside a training job",
        duration_s=10.0,
        policies=POLICY_NAMES,
    )
    p.add_argument(
        "--training",
        choices=sorted(TRAINING),
        default=None,
        help="the training job, in place of the scenario's best-effort one (default resnet50)",
    )
    scenario_option(p, "hybrid")
    args = p.parse_args(argv)
    policies = parse_policies(args.policies)
    scenario = load_scenario(args.scenario)
    roles = scenario.roles
    if args.training is not None:
        model = TRAINING[args.training]
        roles = tuple(
            attrs.evolve(r, model=model, profile=None) if r.kind == "be" else r for r in roles
        )
    return run_colocation(
        "hybrid",
        scenario.title,
        roles,
        policies,
        args,
        PAPER,
        comparison_rows,
    )


if __name__ == "__main__":
    sys.exit(main())

"""What the GPU-sharing experiments share (`stacking`, `hybrid`, `rightsizing`, `dvfs`).

| file          | what it holds                                                        |
| ------------- | -------------------------------------------------------------------- |
| catalogue.py  | the models: Orion profiles in --trace-dir, or the synthetic generator |
| options.py    | the common options, on top of `exp.output.parser`, and `safe_main`  |
| running.py    | runs as picklable `RunJob`s, swept in parallel processes            |
| tenants.py    | roles, the tenants a run makes of them (carried to the GPU), checks |
| figures.py    | a run's figures, seeds pooled together, and the host's timing       |
| stats.py      | bootstrap intervals of percentiles and ratios; unstable queues      |
| trace.py      | the Chrome trace of the GPU timeline                                 |
| plots.py      | the plots                                                            |
| tables.py     | results.md: its tables and the comparison with the paper             |
| notes.py      | results.md's "Why ours differ", written from the run's own figures   |
| colocation.py | the colocation experiments (stacking, hybrid)                        |
| variants.py   | the single-tenant comparisons (rightsizing, dvfs)                    |

Experiments call the same APIs a user would: each run boots a headless
kernel, inserts the policy's `gpu_<policy>` module with the run's
parameters, and runs a `Simulation` that follows the kernel's GPU advisor.
Everything the experiments use is importable from `exp.sharing` itself.
"""

from exp.sharing.catalogue import CATALOGUE, DEFAULT_RATE_PER_S, MS, SLIP, load_model
from exp.sharing.colocation import (
    PAPER_BASELINES,
    POLICY_WEIGHT,
    SAMPLE_NS,
    TRACE_SPAN_NS,
    aggregate_throughput,
    colocation_comparisons,
    colocation_jobs,
    colocation_outputs,
    colocation_records,
    colocation_results,
    hp_latencies,
    record,
    run_colocation,
    warmup_ns,
)
from exp.sharing.figures import (
    by_label,
    fmt,
    ratio,
    run_figures,
    run_timing,
    tenant_figures,
    tenant_latencies,
    timing_line,
)
from exp.sharing.options import (
    P99_SAMPLES,
    check_out,
    done_message,
    duration_ns,
    min_requests,
    parse_policies,
    safe_main,
    seeds,
    sharing_parser,
)
from exp.sharing.plots import plot_allocation, plot_bars, plot_latency_cdf, plot_saving_vs_cost
from exp.sharing.running import RunJob, run_job, run_jobs
from exp.sharing.stats import is_unstable, percentile_ci_ms, ratio_ci
from exp.sharing.tables import (
    colocation_report,
    colocation_rows,
    predictor_line,
    records_table,
    setup_line,
)
from exp.sharing.tenants import (
    SLO_FACTOR,
    Role,
    build_tenants,
    check_inputs,
    role_arrivals,
    role_quotas,
    role_workload,
    slip_tpcs,
)
from exp.sharing.trace import chrome_trace, write_trace
from exp.sharing.variants import INFERENCE_MODELS, run_variants, variant_figures, variant_jobs

__all__ = [
    "CATALOGUE", "DEFAULT_RATE_PER_S", "INFERENCE_MODELS", "MS", "PAPER_BASELINES",
    "POLICY_WEIGHT", "SAMPLE_NS", "check_inputs", "hp_latencies", "is_unstable",
    "percentile_ci_ms", "ratio_ci", "role_arrivals", "role_workload", "warmup_ns",
    "SLIP", "SLO_FACTOR", "TRACE_SPAN_NS", "Role", "RunJob", "aggregate_throughput",
    "build_tenants", "by_label", "check_out", "chrome_trace", "colocation_comparisons",
    "colocation_jobs", "colocation_records", "colocation_outputs", "colocation_report", "colocation_results",
    "colocation_rows", "done_message", "duration_ns", "fmt", "load_model", "min_requests", "P99_SAMPLES",
    "parse_policies", "plot_allocation", "plot_bars", "plot_latency_cdf", "plot_saving_vs_cost",
    "predictor_line", "ratio", "record", "records_table", "role_quotas", "run_colocation",
    "run_figures", "run_job", "run_jobs", "run_timing", "run_variants", "safe_main", "seeds",
    "setup_line", "sharing_parser", "slip_tpcs", "tenant_figures", "tenant_latencies", "timing_line",
    "variant_figures", "variant_jobs", "write_trace",
]  # fmt: skip

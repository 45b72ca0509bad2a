"""`malv serve`: its options, and the command (`exp/loadgen`).

image/cli.py adds the subcommand with `add_serve_command`; the command only
builds `ServeSettings` and calls the API (`serve`, `compare`), and turns
every refusal into one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from exp.output import output_directory, positive_float, positive_int, seed

DEFAULT_OUT = "results/serve"
#: The numeric options: (option, ServeSettings field, type, help).
NUMBERS = (
    ("--qps", "qps", positive_float, "target queries/s"),
    ("--latency-bound-ms", "latency_bound_ms", positive_float, "the latency bound (ms)"),
    (
        "--latency-percentile", "latency_percentile", positive_float,
        "the percentile the bound applies to; MLPerf's Server uses 99, which needs about "
        "500 queries for LoadGen's early stopping",
    ),
    ("--min-duration-s", "min_duration_s", positive_float, "LoadGen's minimum duration (s)"),
    ("--min-queries", "min_queries", positive_int, "LoadGen's minimum query count"),
    (
        "--streams", "server_streams", positive_int,
        "queries the server runs at once, each on a GPU stream of its own",
    ),
    (
        "--query-timeout-s", "query_timeout_s", positive_float,
        "a query unanswered this long (s) is answered as failed (Offline: plus twice "
        "the run's expected length)",
    ),
)  # fmt: skip


def add_serve_command(sub) -> None:
    """`malv serve --loadgen SCENARIO [options]`."""
    from exp.loadgen.settings import SCENARIOS, ServeSettings

    d = ServeSettings()  # the defaults are the API's

    p = sub.add_parser(
        "serve",
        help="put a booted realtime kernel behind MLPerf LoadGen (--loadgen SCENARIO)",
        description="MLPerf LoadGen drives a booted realtime-mode kernel: an inference "
        "server runs each query's model on the vGPU, beside optional best-effort load.",
    )
    p.add_argument("--loadgen", required=True, choices=SCENARIOS, help="LoadGen's scenario")
    p.add_argument(
        "--model", default=d.model,
        help=f"an Orion-format profile (path) or a synthetic preset (default {d.model})",
    )  # fmt: skip
    p.add_argument(
        "--policy", default=d.policy,
        help="the GPU sharing policy, by its advisor module mlaas_modules/gpu_NAME "
        f"(default {d.policy})",
    )  # fmt: skip
    for option, field, kind, text in NUMBERS:
        default = getattr(d, field)
        p.add_argument(
            option, dest=field, metavar=option[2:].upper().replace("-", "_"), type=kind,
            default=default, help=f"{text} (default {default:g})",
        )  # fmt: skip
    p.add_argument(
        "--colocate", default="",
        help="best-effort programs beside the server, comma-separated: gpu-burn, "
        "train:MODEL (a profile or a preset, e.g. train:resnet50_b32_training)",
    )  # fmt: skip
    p.add_argument("--seed", type=seed, default=d.seed, help="LoadGen's and the kernel's seed")
    p.add_argument(
        "--out", type=output_directory, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}"
    )
    p.add_argument(
        "--compare", metavar="POLICIES",
        help="run under each policy (comma-separated, e.g. mps,lithos) and show the table",
    )  # fmt: skip
    p.add_argument(
        "--find-peak", action="store_true",
        help="search for the highest --qps each policy (--policy, or --compare's) holds "
        "VALID: double from --qps until a run is not, then bisect to within 10%%",
    )  # fmt: skip
    p.set_defaults(func=cmd_serve)


def _names(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def cmd_serve(args: argparse.Namespace) -> int:
    from exp.loadgen import (
        LoadgenMissing,
        ServeError,
        ServeSettings,
        SettingsError,
        compare,
        find_peak,
        serve,
    )
    from exp.loadgen.results import table
    from exp.loadgen.settings import policy_module
    from exp.loadgen.sut import import_loadgen

    try:
        settings = ServeSettings(
            scenario=args.loadgen, model=args.model, policy=args.policy,
            colocate=_names(args.colocate), seed=args.seed,
            **{field: getattr(args, field) for _, field, _, _ in NUMBERS},
        )  # fmt: skip
        policies = _names(args.compare) if args.compare is not None else ()
        if args.compare is not None and not policies:
            raise SettingsError("--compare: name the policies, e.g. mps,lithos")
        for policy in policies:
            policy_module(policy)
        check_model(settings)
        import_loadgen()  # a missing LoadGen is said before anything else
        runs = ", ".join(policies or (str(settings.policy),))
        print(
            f"malv serve: LoadGen {settings.scenario}, at least {settings.min_duration_s:g} s "
            f"and {settings.min_queries} queries per run ({runs})",
            file=sys.stderr,
        )
        if args.find_peak:
            say = lambda line: print(f"malv serve: {line}", file=sys.stderr)  # noqa: E731
            data = find_peak(settings, policies, args.out, progress=say)
        elif policies:
            data = compare(settings, policies, args.out)
        else:
            data = serve(settings, args.out)
    except (LoadgenMissing, SettingsError, ServeError) as exc:
        print(f"malv serve: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("malv serve: interrupted; nothing was written", file=sys.stderr)
        # LoadGen's own threads outlive a test cut short, and would call into
        # an interpreter shutting down: leave now (the kernel is stopped).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    print(table(data), end="")
    print(f"results in {args.out}")
    return 0


def check_model(settings) -> None:
    """Refuse a model the server could not load, before booting."""
    from drivers.vgpu.errors import GpuError
    from drivers.vgpu.traces import load_workload
    from exp.loadgen.settings import TRAIN_PREFIX, SettingsError

    trained = [c[len(TRAIN_PREFIX) :] for c in settings.colocate if c.startswith(TRAIN_PREFIX)]
    for spec in (settings.model, *trained):
        try:
            load_workload(spec)
        except GpuError as exc:
            raise SettingsError(f"model: {exc}") from None

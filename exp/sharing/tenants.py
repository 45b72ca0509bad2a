"""The tenants of the colocation experiments: roles, and the tenants a run makes of them.

A `Role` is a tenant as a scenario file names it (`exp/scenario.py`): its
model, kind, arrival process, SLO and share of the GPU.  `build_tenants`
makes a seed's `Tenant`s of the roles for the simulator, at a given load
(a multiple of the open-loop rates), each model's durations carried from
the device it was measured on to the one simulated (`traces.carry_to`),
and `check_inputs` refuses, before anything runs, a run too short for the
percentiles it reports and a profile of placeholder durations.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import attrs

from drivers.vgpu.errors import InvalidArgument
from drivers.vgpu.presets import get_preset
from drivers.vgpu.sharing import Tenant
from drivers.vgpu.sharing.arrivals import arrival_times_ns, load_arrivals, poisson_times_ns
from drivers.vgpu.sharing.sim import LAUNCH_QUEUE_DEPTH
from drivers.vgpu.traces import (
    ORION_DEVICE,
    Workload,
    carry_to,
    implausible_duration,
    load_orion_csv,
)
from exp.sharing.catalogue import DEFAULT_RATE_PER_S, MS, SLIP, load_model
from exp.sharing.options import min_requests

#: Open-loop requests must finish within this multiple of the model's
#: isolated request time (its kernels back to back on the whole GPU).
SLO_FACTOR = 2.0


@attrs.frozen
class Role:
    """A tenant of a colocation experiment.

    The latency-critical tenant (`sized`) gets a quota by LithOS's slip rule
    applied to a whole request: the fewest TPCs on which its isolated request
    time stays within `SLIP` of the whole GPU's.  The others share the rest
    in proportion to their `weight`.  Every spatial policy uses these shares
    (MIG slices, MPS thread percentages, LithOS TPC quotas).
    """

    name: str
    model: str  # a CATALOGUE key, or "" when `profile` names the file
    kind: str  # open, closed, be
    weight: float = 1.0
    sized: bool = False
    #: An Orion-format profile by path, instead of a built-in `model`.
    profile: str | None = None
    batch: int | None = None  # as the profile was measured; shown, not used
    #: A training loop: its host runs ahead of the GPU, as a best-effort job's does.
    training: bool = False
    #: Open loop: a Poisson rate, or an arrival file read from an offset into
    #: it; neither is the command line's --arrivals (default: Orion's rate).
    rate_per_s: float | None = None
    arrival_file: str | None = None
    arrival_offset_s: float = 0.0
    arrival_speedup: float = 1.0
    #: The SLO: `slo_ms`, or `slo_factor` times the isolated request time.
    slo_ms: float | None = None
    slo_factor: float = SLO_FACTOR
    #: The GPU preset the model's durations were measured on; None: its
    #: source's own (Orion's files: the V100; the synthetic generator: the
    #: device simulated).
    measured_on: str | None = None

    @property
    def label(self) -> str:
        """The model as a table names it: the catalogue key or the profile's file name."""
        return os.path.basename(self.profile) if self.profile else self.model


def slip_tpcs(workload: Workload, n_tpcs: int, slip: float = SLIP) -> int:
    """The fewest TPCs on which `workload`'s isolated request time is within `slip`."""
    full = workload.isolated_duration_ns(n_tpcs)
    return min(t for t in range(1, n_tpcs + 1) if workload.isolated_duration_ns(t) <= slip * full)


def role_quotas(roles: Sequence[Role], workloads: Sequence[Workload], n_tpcs: int) -> list[float]:
    sized = [
        slip_tpcs(w, n_tpcs) / n_tpcs if r.sized else 0.0
        for r, w in zip(roles, workloads, strict=True)
    ]
    rest = 1.0 - sum(sized)
    weights = sum(r.weight for r in roles if not r.sized)
    return [q if r.sized else rest * r.weight / weights for r, q in zip(roles, sized, strict=True)]


def measured_workload(role: Role, trace_dir: str | None, seed: int) -> Workload:
    """The role's model as it was measured (or drawn), before any carrying."""
    if role.profile is not None:
        return load_orion_csv(role.profile, role.measured_on or ORION_DEVICE)
    return load_model(role.model, trace_dir, seed, role.measured_on)


def role_workload(role: Role, trace_dir: str | None, seed: int, gpu: str = "a100") -> Workload:
    """The role's model on the simulated GPU preset `gpu` (`traces.carry_to`)."""
    return carry_to(measured_workload(role, trace_dir, seed), get_preset(gpu))


def role_arrivals(
    role: Role, args: argparse.Namespace, duration: int, seed: int, load: float = 1.0
) -> tuple[int, ...]:
    """An open-loop role's arrival instants; `load` multiplies its rate.

    The command line's --arrivals, where given, replaces every open role's own."""
    if args.arrivals is None and role.arrival_file is None:
        return poisson_times_ns((role.rate_per_s or DEFAULT_RATE_PER_S) * load, duration, seed)
    if args.arrivals is not None:
        path, speedup, offset_ns = args.arrivals, args.arrival_speedup, 0
    else:
        path, speedup = role.arrival_file, role.arrival_speedup
        offset_ns = int(role.arrival_offset_s * 1e9)
    times = arrival_times_ns(load_arrivals(path), duration + offset_ns, seed, speedup * load)
    return tuple(t - offset_ns for t in times if t >= offset_ns)


def arrival_label(role: Role, args: argparse.Namespace) -> str:
    """An open-loop role's arrival process as results name it: the Poisson
    rate, or the trace file's name and its mean rate (speed-up applied)."""
    if args.arrivals is None and role.arrival_file is None:
        return f"poisson {role.rate_per_s or DEFAULT_RATE_PER_S:g}/s"
    if args.arrivals is not None:
        path, speedup, offset = args.arrivals, args.arrival_speedup, 0.0
    else:
        path, speedup, offset = role.arrival_file, role.arrival_speedup, role.arrival_offset_s
    rate = load_arrivals(path).mean_rate_per_s * speedup
    extras = "".join(
        (
            f", speed-up {speedup:g}" if speedup != 1 else "",
            f", from {offset:g} s" if offset else "",
        )
    )
    return f"trace {os.path.basename(path)} ({rate:.3g}/s{extras})"


def arrivals_label(roles: Sequence[Role], args: argparse.Namespace) -> str:
    """Every open-loop role's arrivals: one label if they all share it, else one each."""
    labels = {role.name: arrival_label(role, args) for role in roles if role.kind == "open"}
    if not labels:
        return "none (every tenant runs closed loop)"
    if len(set(labels.values())) == 1:
        return next(iter(labels.values()))
    return "; ".join(f"{name}: {label}" for name, label in labels.items())


def build_tenants(
    roles: Sequence[Role],
    args: argparse.Namespace,
    seed: int,
    duration: int,
    load: float = 1.0,
):
    spec_tpcs = get_preset(args.gpu).n_tpcs
    workloads = [role_workload(role, args.trace_dir, seed, args.gpu) for role in roles]
    quotas = role_quotas(roles, workloads, spec_tpcs)
    tenants = []
    for role, workload, quota in zip(roles, workloads, quotas, strict=True):
        arrivals = role_arrivals(role, args, duration, seed, load) if role.kind == "open" else ()
        slo = None
        if role.slo_ms is not None and role.kind != "be":
            slo = int(role.slo_ms * MS)
        elif role.kind != "be":
            slo = int(role.slo_factor * workload.isolated_duration_ns(spec_tpcs))
        # Best-effort jobs and training loops never wait for a result: their host runs ahead.
        run_ahead = LAUNCH_QUEUE_DEPTH if role.kind == "be" or role.training else 0
        tenants.append(Tenant(role.name, workload, role.kind, arrivals, quota, slo, run_ahead))
    return tuple(tenants)


def check_inputs(
    roles: Sequence[Role],
    args: argparse.Namespace,
    seeds: Sequence[int],
    duration: int,
    warmup: int,
    load: float = 1.0,
) -> None:
    """Refuse a profile of placeholder durations unless --allow-placeholder
    is given (`placeholder_notes`), and a run in which an open-loop tenant
    gets fewer requests, over all seeds, than --min-requests."""
    notes = placeholder_notes(roles, args, seeds[0])
    if notes and not getattr(args, "allow_placeholder", False):
        name, note = next(iter(notes.items()))
        raise InvalidArgument(
            f"tenant {name!r}: {note} Refused: its latencies would mean nothing; "
            "--allow-placeholder runs it anyway, marked in the results"
        )
    need = min_requests(args)
    for role in roles:
        if role.kind != "open":
            continue
        got = sum(
            sum(t >= warmup for t in role_arrivals(role, args, duration, seed, load))
            for seed in seeds
        )
        if got < need:
            source = args.arrivals or role.arrival_file or "Poisson arrivals"
            raise InvalidArgument(
                f"tenant {role.name!r} ({source}) at load {load:g} gets {got} requests in the measured "
                f"window over {len(seeds)} seed(s), fewer than the {need} a P99 needs; "
                "lengthen --duration or add --seeds"
            )


def placeholder_notes(roles: Sequence[Role], args: argparse.Namespace, seed: int) -> dict[str, str]:
    """Per tenant whose profile holds placeholder durations (Orion's `*_fb0`
    lists: every row ``-1,1,1,7``), why it looks so (`traces.implausible_duration`)."""
    notes = {}
    for role in roles:
        note = implausible_duration(measured_workload(role, args.trace_dir, seed))
        if note is not None:
            notes[role.name] = note
    return notes

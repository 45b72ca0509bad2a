"""results.md's "Why ours differ", written from the run's own figures (`exp/sharing`).

Each note is a sentence or two that holds only where the run's numbers say
it does: a load the run offered, a ratio it measured, a queue that did not
drain, a tenant a policy starved, the devices the durations came from.  A
note that does not apply to a run is left out, so the notes of two runs
differ as their figures do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from drivers.vgpu.presets import GpuSpec, get_preset
from drivers.vgpu.traces import CARRY_VALIDATION, device_factors
from exp.sharing.options import P99_SAMPLES

#: A tenant served at less than this share of its isolated throughput is starved.
STARVED = 0.2
#: The policies that hold best-effort work while high-priority work is pending or running.
HOLDERS = ("priority", "tgs", "reef", "orion")
#: Two P99s within this ratio of each other are "about the same".
SAME = 1.1


def bullets(notes: Sequence[str]) -> str:
    return "\n".join(f"* {n}" for n in notes if n) or "* (no note applies to this run)"


def device_note(tenants: Sequence[dict], gpu: str, trace_dir: str | None) -> str:
    """Where the durations were measured, and how they were carried to `gpu`."""
    carried = sorted({t["measured_on"] for t in tenants if t["measured_on"] != gpu})
    synthetic = [t["name"] for t in tenants if not t.get("profile") and not trace_dir]
    parts = []
    if carried:
        spec = get_preset(gpu)
        factors = "; ".join(_factors(get_preset(m), spec) for m in carried)
        names = ", ".join(t["name"] for t in tenants if t["measured_on"] != gpu)
        parts.append(
            f"**Devices.** {names}: durations measured on the {', '.join(carried)}, simulated "
            f"on the {gpu} and carried by `drivers/vgpu/traces.py` (`carry_to`): {factors}.  "
            f"The model is {CARRY_VALIDATION}; tensor cores and caches are not in it."
        )
    if synthetic:
        parts.append(
            f"**Synthetic kernels.** {', '.join(synthetic)}: drawn by the synthetic generator "
            "from the summary figures of Orion's V100 profiles, not measured "
            "(`--trace-dir` or `profile =` runs the profiles themselves)."
        )
    return "  ".join(parts)


def _factors(measured: GpuSpec, simulated: GpuSpec) -> str:
    compute, memory = device_factors(measured, simulated)
    return (
        f"{measured.name} to {simulated.name}, a block's compute part x{compute:.3f}, its "
        f"memory part x{memory:.3f}"
    )


def _record(data: dict, policy: str, tenant: str) -> dict | None:
    return next(
        (r for r in data["records"] if r["policy"] == policy and r["tenant"] == tenant), None
    )


def _isolated(data: dict, tenant: str) -> dict:
    return next(r for r in data["isolated"] if r["tenant"] == tenant)


def load_note(data: dict, tenant: dict) -> str:
    """How busy an open-loop tenant keeps the GPU alone, and what MPS did to its tail."""
    iso = _isolated(data, tenant["name"])
    busy = iso["throughput_rps"] * iso["mean_ms"] / 1e3
    text = (
        f"**Load.** Alone, {tenant['name']} completed {iso['throughput_rps']:.1f} requests/s "
        f"at {iso['mean_ms']:.2f} ms each, so it kept the GPU busy {100 * busy:.0f}% of the "
        f"time (offered: {data['config']['arrivals']})."
    )
    mps = _record(data, "mps", tenant["name"])
    if mps is not None and not mps["unstable"]:
        text += (
            f"  Under MPS its P99 is {mps['p99_vs_isolated']:.2f}x its isolated P99 "
            f"({mps['p99_ms']:.2f} vs {iso['p99_ms']:.2f} ms): "
            + (
                "requests rarely queue behind each other at this load, so MPS costs only the "
                "wait behind the other tenants' kernels; the paper's ratios are at its own loads."
                if busy < 0.5
                else "at this load requests queue behind each other as well."
            )
        )
    return text


def quota_note(data: dict, tenant: dict, n_tpcs: int) -> str:
    """LithOS's quota of a sized tenant, and what its tail came to."""
    lithos = _record(data, "lithos", tenant["name"])
    if lithos is None or not tenant.get("sized"):
        return ""
    tpcs = round(tenant["quota"] * n_tpcs)
    return (
        f"**Quota.** LithOS gives {tenant['name']} {tpcs} of the {n_tpcs} TPCs, the fewest on "
        "which its isolated request time stays within slip 1.1 of the whole GPU's; its P99 "
        f"under LithOS is {lithos['p99_vs_isolated']:.2f}x its isolated P99."
    )


def partition_note(data: dict, hp: str) -> str:
    """The static partitions against LithOS: tail and aggregate throughput."""
    lithos = _record(data, "lithos", hp)
    if lithos is None:
        return ""
    agg = data.get("comparisons", {}).get("aggregate_throughput", {})
    parts = []
    for policy in ("mps-limit", "mig"):
        r = _record(data, policy, hp)
        if r is None or r["unstable"] or lithos["unstable"]:
            continue
        ratio = r["p99_ms"] / lithos["p99_ms"]
        verdict = "about LithOS's" if 1 / SAME <= ratio <= SAME else (
            "above LithOS's" if ratio > SAME else "below LithOS's")  # fmt: skip
        parts.append(
            f"{policy} {r['p99_ms']:.2f} ms ({verdict} {lithos['p99_ms']:.2f} ms), aggregate "
            f"throughput {agg.get(policy, float('nan')):.2f} against LithOS's "
            f"{agg.get('lithos', float('nan')):.2f}"
        )
    if not parts:
        return ""
    return (
        f"**Partitions.** {hp}'s P99 under the static partitions: " + "; ".join(parts) + ".  "
        "They give it the same share of TPCs as LithOS's quota; LithOS also lends the TPCs it "
        "leaves idle.  The engine has one memory system, so no partition isolates bandwidth."
    )


def starvation_note(data: dict, tenants: Sequence[dict]) -> str:
    """Best-effort tenants a policy served at under `STARVED` of their isolated throughput."""
    held: list[str] = []
    other: list[str] = []
    for t in tenants:
        if t["kind"] != "be":
            continue
        for r in data["records"]:
            if r["tenant"] == t["name"] and r["throughput_vs_isolated"] < STARVED:
                share = f"{t['name']} under {r['policy']} {100 * r['throughput_vs_isolated']:.0f}%"
                (held if r["policy"] in HOLDERS else other).append(share)
    parts = []
    if held:
        closed = [t["name"] for t in tenants if t["kind"] == "closed"]
        parts.append(
            f"**Starved.** Best-effort throughput, as a share of isolated: {', '.join(held)}.  "
            "These policies hold best-effort work while a high-priority tenant is busy"
            + (f", and {', '.join(closed)} runs closed loop, always busy." if closed else ".")
        )
    if other:
        parts.append(
            f"**Small shares.** {', '.join(other)} of isolated throughput: its share of the "
            "GPU under these policies is its quota, "
            + ", ".join(f"{t['name']} {t['quota']:.3f}" for t in tenants if t["kind"] == "be")
            + "."
        )
    return "  ".join(parts)


def queue_note(data: dict) -> str:
    """Queues that did not drain, and percentiles from too few requests."""
    unstable = [f"{r['policy']} ({r['tenant']}, {r['unfinished']} left)"
                for r in data["records"] if r["unstable"]]  # fmt: skip
    thin = sorted({f"{r['policy']} ({r['tenant']}, {r['requests']})" for r in data["records"]
                   if r["kind"] == "open" and r["requests"] < P99_SAMPLES})  # fmt: skip
    parts = []
    if unstable:
        parts.append(
            f"**Unstable.** These queues did not drain: {', '.join(unstable)}; their "
            "percentiles grow with the run's length and give no ratio."
        )
    if thin:
        parts.append(
            f"**Thin.** These P99s rest on fewer than {P99_SAMPLES} requests: {', '.join(thin)}."
        )
    return "  ".join(parts)


def baseline_note(data: dict) -> str:
    """When the best other policy's tail beats LithOS's, by how much and what LithOS paid."""
    c = data.get("comparisons", {})
    ratio = c.get("best_other_vs_lithos_p99")
    if ratio is None or ratio != ratio or ratio >= 1 / SAME:
        return ""
    return (
        f"**LithOS is not the lowest tail here.** {c['best_other']}'s P99 for {c['tenant']} is "
        f"{ratio:.2f}x LithOS's ({c['best_other_p99_ms']:.2f} vs {c['lithos_p99_ms']:.2f} ms); "
        f"LithOS's own is {c['lithos_vs_isolated_p99']:.2f}x isolated, of which its quota "
        "alone allows up to 1.1x (the slip); the rest is waiting for its TPCs."
        + (
            "  REEF's kill of running best-effort kernels is not modelled (the engine never "
            "evicts a running block), nor are REEF's and Orion's interception costs."
            if c["best_other"] in ("reef", "orion")
            else ""
        )
    )


def energy_note(data: dict) -> str:
    power = {r["policy"]: r["avg_power_w"] for r in data["records"]}
    if not power:
        return ""
    low = min(power, key=lambda p: power[p])
    high = max(power, key=lambda p: power[p])
    return (
        "**Energy.** Energy and power are the device's over the measured window, the same for "
        f"every tenant of a run: from {power[low]:.0f} W ({low}) to {power[high]:.0f} W ({high})."
    )


def mig_note(data: dict) -> str:
    """MIG runs on a preset whose real GPU has no MIG (the V100, a Volta part)."""
    gpu = data["config"]["gpu"]
    mig = [r for r in data["records"] if r["policy"] == "mig"]
    if gpu != "v100" or not mig:
        return ""
    return (
        "**No MIG on a real V100.** Volta has no MIG; the mig runs here split the preset's "
        f"{get_preset(gpu).n_tpcs} TPCs into slices as an A100 would, which no real V100 offers."
    )


def colocation_notes(data: dict) -> str:
    """The stacking and hybrid experiments' notes, from `data` (results.json)."""
    cfg = data["config"]
    tenants = cfg["tenants"]
    n_tpcs = get_preset(cfg["gpu"]).n_tpcs
    hp = data.get("comparisons", {}).get("tenant") or tenants[0]["name"]
    notes: list[Any] = [device_note(tenants, cfg["gpu"], cfg.get("trace_dir"))]
    notes += [load_note(data, t) for t in tenants if t["kind"] == "open"]
    notes += [quota_note(data, t, n_tpcs) for t in tenants]
    notes += [partition_note(data, hp), starvation_note(data, tenants), baseline_note(data),
              queue_note(data), energy_note(data), mig_note(data)]  # fmt: skip
    return bullets(notes)


def _spread(rows: dict[str, dict], key: str, sign: str = "") -> str:
    """The lowest and highest of `key` over the models, named (`sign` "+": signed)."""
    low = min(rows, key=lambda m: rows[m][key])
    high = max(rows, key=lambda m: rows[m][key])
    lo, hi = 100 * rows[low][key], 100 * rows[high][key]
    return f"from {lo:{sign}.1f}% ({low}) to {hi:{sign}.1f}% ({high})"


def _slip_note(rows: dict[str, dict], slip: float) -> str:
    over = [m for m, r in rows.items() if r["p99_cost"] > slip - 1]
    verdict = (
        f"beyond the slip's {100 * (slip - 1):+.0f}%: {', '.join(over)}"
        if over
        else f"every model within the slip's {100 * (slip - 1):+.0f}%"
    )
    return f"**Cost.** P99 latency cost per model {_spread(rows, 'p99_cost', '+')}; {verdict}."


def rightsizing_notes(data: dict) -> str:
    """The right-sizing experiment's notes, from `data` (results.json)."""
    cfg, s = data["config"], data["summary"]
    rows, mean = s["models"], s["mean"]
    cap, trim = mean["capacity_saved"], mean["trim_saved"]
    share = f"{100 * trim / cap:.0f}% of" if cap > 0 else "all of"
    notes = [
        device_note(cfg["sources"], cfg["gpu"], cfg.get("trace_dir")),
        f"**What is saved.** Right-sizing saved {100 * cap:.1f}% of the TPC capacity per "
        f"request on average ({_spread(rows, 'capacity_saved')}); trimming each kernel to "
        f"the TPCs its grid can occupy saved {100 * trim:.1f}%, {share} it.  A kernel here "
        "runs in whole waves of equal blocks, so that trim is exact and free; the fitted "
        "l(t) = m/t + b adds what the slip allows beyond it.",
        _slip_note(rows, cfg["slip"]),
    ]
    rates = [
        r["misprediction_rate"] for r in rows.values() if r.get("misprediction_rate") is not None
    ]
    if rates:
        notes.append(
            f"**Predictor.** LithOS's latency predictor mispredicted {100 * min(rates):.1f}% to "
            f"{100 * max(rates):.1f}% of the right-sized atoms (error over 50 us)."
        )
    return bullets(notes)


def dvfs_notes(data: dict) -> str:
    """The DVFS experiment's notes, from `data` (results.json)."""
    cfg, s = data["config"], data["summary"]
    rows, mean = s["models"], s["mean"]
    spec = get_preset(cfg["gpu"])
    clocks = [r["final_clock_mhz"] for r in rows.values() if r["final_clock_mhz"] is not None]
    sens = [r["sensitivity"] for r in rows.values() if r["sensitivity"] is not None]
    notes = [device_note(cfg["sources"], cfg["gpu"], cfg.get("trace_dir"))]
    if clocks:
        notes.append(
            f"**Clock.** The governor ended at {min(clocks)}-{max(clocks)} MHz of the "
            f"{spec.name}'s {spec.max_clock_mhz} MHz"
            + (f", for sensitivities S of {min(sens):.2f}-{max(sens):.2f}" if sens else "")
            + f"; energy per request fell {100 * mean['energy_saved']:.1f}% on average "
            f"({_spread(rows, 'energy_saved')})."
        )
    fmax = float(np.mean([r["power_w_fmax"] for r in rows.values()]))
    dvfs = float(np.mean([r["power_w"] for r in rows.values()]))
    notes.append(
        f"**Where the energy goes.** At the maximum clock the runs drew {fmax:.0f} W on "
        f"average, of which {spec.idle_power_w:.0f} W ({100 * spec.idle_power_w / fmax:.0f}%) "
        f"is the {spec.name} preset's idle power, which DVFS does not lower, and which a "
        f"slower request pays for longer; with DVFS they drew {dvfs:.0f} W.  The power "
        "constants are this model's own (`drivers/vgpu/presets.py`), not a measured "
        f"{spec.name}'s, and the voltage stops falling below {spec.ridge_clock_mhz} MHz."
    )
    notes.append(_slip_note(rows, cfg["slip"]))
    return bullets(notes)

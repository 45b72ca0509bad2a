"""Golden results of the sharing layer: seeded runs that must stay byte-identical.

Each case is a seeded simulation (the policies' equivalence corpus: every
policy on the stacking and hybrid tenants, LithOS's variants, switches
while running, a researcher's own Python policy, the wave engine and a
device wider than 63 TPCs) or a `--quick` experiment.  Its *fingerprint*
is the SHA-256 of each part of what it produced (atom log, per-stream
results, policy figures, trace atoms, clock log) and its energy, exactly.
`tests/policies/test_golden.py` recomputes them and compares.

A change that alters a seeded result on purpose (a fixed bug) re-records
them, and says which figures changed and why::

    python -m tests.policies.golden --write
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drivers.vgpu.policies import POLICY_NAMES, make_policy
from drivers.vgpu.sharing import Simulation
from drivers.vgpu.sharing.policy import SharingPolicy
from drivers.vgpu.sharing.sim import RunResult
from exp.hybrid import TRAINING
from exp.sharing import Role, build_tenants, duration_ns, sharing_parser
from exp.stacking import ROLES as STACKING

HERE = Path(__file__).resolve().parent / "golden"
CORPUS = HERE / "corpus.json"
HYBRID = (Role("HP A", "resnet50", "open", sized=True), Role("BE", TRAINING["resnet50"], "be"))
ROLES = {"stacking": STACKING, "hybrid": HYBRID}
DURATION_S = 0.1
#: The `--quick` experiments and seeds whose results.json is kept whole.
EXPERIMENTS = [("stacking", 0), ("stacking", 1), ("hybrid", 0), ("hybrid", 1)]

LITHOS_VARIANTS = {
    "rightsizing": {"rightsizing": True},
    "trim": {"rightsizing": True, "rightsizing_fit": False},
    "dvfs": {"dvfs": True, "dvfs_period_ns": 10_000_000, "dvfs_min_interval_ns": 20_000_000},
    "both": {"rightsizing": True, "dvfs": True, "dvfs_period_ns": 10_000_000},
    # A clock request every millisecond: the clock tables must grow.  The
    # measured estimate moves the clock; the isolated one sets it once.
    "clocks": {
        "dvfs": True,
        "dvfs_period_ns": 1_000_000,
        "dvfs_min_interval_ns": 1_000_000,
        "estimate": "observed",
    },
    "no-stealing": {"stealing": False},
    "no-atoms": {"atomization": False, "max_stolen": 0},
    "narrow": {"max_inflight": 1, "atom_max_ns": 100_000, "max_stolen": 3},
}
SWITCHES = [("mps", "lithos"), ("lithos", "mig"), ("mig", "priority"), ("timeslice", "tgs"),
            ("orion", "reef")]  # fmt: skip


class Pinned(SharingPolicy):
    """A researcher's own policy in plain Python, with no compiled callbacks:
    the base policy's whole kernels as they are ready, every one on the
    first half of the TPCs.  It runs in the loop interpreted."""

    name = "pinned"

    def mask(self, s) -> int:
        return (1 << (self.sim.n_tpcs // 2)) - 1


def tenants_of(roles_name: str, seed: int):
    args = sharing_parser("t", "", duration_s=DURATION_S, policies=POLICY_NAMES).parse_args(
        ["--duration", str(DURATION_S)]
    )
    return build_tenants(ROLES[roles_name], args, seed, duration_ns(args))


def simulate(
    roles: str, seed: int, policy: Any, *, switch=None, **kw
) -> tuple[Simulation, RunResult]:
    """One seeded run; `switch`: (instant, policy) to switch to while running."""
    sim = Simulation(
        tenants_of(roles, seed), policy, duration_ns=int(DURATION_S * 1e9),
        warmup_ns=10_000_000, trace_window_ns=(0, 40_000_000), **kw,
    )  # fmt: skip
    sim.record_launches = True
    if switch is not None:
        when, new = switch
        sim.call_at(when, sim.set_policy, new)
    return sim, sim.run()


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()


def _plain(value: Any) -> Any:
    if hasattr(value, "__attrs_attrs__"):
        return {a.name: getattr(value, a.name) for a in value.__attrs_attrs__}
    raise TypeError(f"cannot fingerprint {type(value).__name__}")


def fingerprint(sim: Simulation, result: RunResult) -> dict[str, Any]:
    """What a run produced: counts, exact energy, and a digest per part."""
    log = sim.atom_log()
    return {
        "atoms": len(log),
        "energy_j": repr(result.energy_j),
        "atom_log": _digest(log),
        "streams": _digest(result.streams),
        "extra": _digest(result.extra),
        "trace_atoms": _digest(result.atoms),
        "clocks": _digest(result.clocks),
    }


def cases() -> dict[str, Callable[[], tuple[Simulation, RunResult]]]:
    """Every seeded simulation of the corpus, by name."""
    out: dict[str, Callable[[], tuple[Simulation, RunResult]]] = {}
    for name in POLICY_NAMES:
        for roles in ROLES:
            for seed in (0, 1):
                out[f"{name}/{roles}/{seed}"] = lambda n=name, r=roles, s=seed: simulate(
                    r, s, make_policy(n)
                )
    for name in ("mps", "priority", "lithos"):
        out[f"{name}/stacking/0/wave"] = lambda n=name: simulate(
            "stacking", 0, make_policy(n), engine_mode="wave"
        )
    for variant, params in LITHOS_VARIANTS.items():
        for roles in ROLES:
            out[f"lithos-{variant}/{roles}/0"] = lambda p=params, r=roles: simulate(
                r, 0, make_policy("lithos", **p)
            )
    for first, then in SWITCHES:
        out[f"{first}->{then}/stacking/0"] = lambda a=first, b=then: simulate(
            "stacking", 0, make_policy(a), switch=(40_000_000, make_policy(b))
        )
    out["pinned/stacking/0"] = lambda: simulate("stacking", 0, Pinned())
    out["lithos-dvfs->pinned/stacking/0"] = lambda: simulate(
        "stacking", 0, make_policy("lithos", dvfs=True), switch=(40_000_000, Pinned())
    )
    for name in ("mps", "lithos", "timeslice"):
        out[f"{name}/stacking/0/h100"] = lambda n=name: simulate(
            "stacking", 0, make_policy(n), spec="h100"
        )
    return out


def run_experiment(name: str, seed: int, out: Path) -> dict[str, Any]:
    """`malv exp NAME --quick --seed SEED`'s results.json, and its trace's digest."""
    from exp import hybrid, stacking

    main = {"stacking": stacking.main, "hybrid": hybrid.main}[name]
    rc = main(["--quick", "--seed", str(seed), "--quiet", "--jobs", "1", "--out", str(out)])
    if rc != 0:
        raise RuntimeError(f"malv exp {name} --quick --seed {seed} failed: {rc}")
    results = json.loads((out / "results.json").read_text())
    trace = hashlib.sha256((out / "trace.json").read_bytes()).hexdigest()
    return {"results": results, "trace_sha256": trace}


def experiment_file(name: str, seed: int) -> Path:
    return HERE / f"{name}-quick-seed{seed}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="re-record the sharing layer's golden results")
    parser.add_argument("--write", action="store_true", help="write them (else: print)")
    parser.add_argument("--only", choices=("corpus", "experiments"), default=None)
    args = parser.parse_args(argv)
    if args.only in (None, "corpus"):
        corpus = {name: fingerprint(*make()) for name, make in cases().items()}
        text = json.dumps(corpus, indent=1, sort_keys=True) + "\n"
        if args.write:
            CORPUS.write_text(text)
        else:
            print(text)
    if args.only in (None, "experiments"):
        for name, seed in EXPERIMENTS:
            with tempfile.TemporaryDirectory() as tmp:
                got = run_experiment(name, seed, Path(tmp) / "out")
            text = json.dumps(got, indent=1, sort_keys=True) + "\n"
            if args.write:
                experiment_file(name, seed).write_text(text)
            else:
                print(name, seed, got["trace_sha256"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

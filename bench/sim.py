"""`malv bench sim`: how fast inference stacking simulates, against real time.

The stacking experiment's three tenants (a ResNet-50 service, a ResNet-101
closed loop, a BERT best-effort job) on the a100, one process, under every
policy: on the Orion profiles and arrival trace in ../shared/workloads when
they are there, else on the synthetic models.  Each policy runs in the one
loop (`drivers/vgpu/sharing/epoch.py`) compiled, and the same source
interpreted, on the same tenants; the figure is simulated seconds per CPU
second compiled, with the interpreted loop's as the baseline.  The
design's target is 150x real time for every policy.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.report import Figure
from drivers.vgpu.policies import POLICY_NAMES, make_policy
from drivers.vgpu.sharing import Simulation
from exp.sharing import build_tenants, duration_ns, sharing_parser
from exp.stacking import ROLES

WORKLOADS = Path(__file__).resolve().parents[2] / "shared" / "workloads"


def _tenants(seconds: float):
    argv = ["--duration", str(seconds)]
    orion = WORKLOADS / "orion"
    if orion.is_dir():
        argv += ["--trace-dir", str(orion)]
        argv += ["--arrivals", str(WORKLOADS / "arrivals" / "orion_inter_arrival_times.json")]
    args = sharing_parser("stacking", "", duration_s=seconds, policies=POLICY_NAMES).parse_args(
        argv
    )
    return build_tenants(ROLES, args, 0, duration_ns(args))


def _speed(tenants, policy: str, seconds: float, compiled: bool) -> tuple[float, float, bool]:
    """Simulated seconds per CPU second and per wall second; whether it ran compiled."""
    sim = Simulation(
        tenants, make_policy(policy), duration_ns=int(seconds * 1e9), compiled=compiled
    )  # fmt: skip
    cpu0, wall0 = time.process_time(), time.perf_counter()
    sim.run()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return seconds / max(cpu, 1e-9), seconds / max(wall, 1e-9), sim.compiled is not None


def run(quick: bool = False, seconds: float | None = None) -> list[Figure]:
    """`seconds`: simulated seconds per run (default 2, quick 0.5)."""
    seconds = seconds or (0.5 if quick else 2.0)
    tenants = _tenants(seconds)
    for policy in POLICY_NAMES:  # warm the numba cache and the models
        _speed(tenants, policy, 0.01, True)
    figures = []
    for policy in POLICY_NAMES:
        cpu, wall, compiled = _speed(tenants, policy, seconds, True)
        base_cpu, _, _ = _speed(tenants, policy, seconds, False)
        form = "compiled" if compiled else "interpreted"
        figures.append(
            Figure(
                f"sim.stacking_{policy} [{form}]",
                cpu,
                "sim s per CPU s",
                baseline=base_cpu,
                baseline_name="interpreted",
                target=">= 150",
            )
        )
        figures.append(Figure(f"sim.stacking_{policy} [{form}] wall", wall, "sim s per wall s"))
    return figures

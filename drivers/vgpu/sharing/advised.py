"""Sharing policies chosen by MLaaS modules while running (`drivers/vgpu/sharing`).

Each policy ships as a thin GPU advisor in `mlaas_modules/gpu_<policy>.py`:
a `GpuAdvisor` whose class attribute `sharing_policy` names the mechanism
and whose insmod parameters are its parameter set.  `follow_advisors`
keeps a running `Simulation` on whatever GPU advisor the kernel's MLaaS
subsystem has attached: every `period_ns` of virtual time it looks, and
when the module or its parameters changed (insmod, rmmod, reload, a fault
that ejected it) it switches to the new policy, handing the held kernels
over; with no GPU advisor it returns to `default`.  An attached power
advisor is asked for the clock on the same beat.

Modules see only the advisor API, so they name a policy and carry plain
parameters; this file is where the driver turns them into a mechanism.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from drivers.vgpu.policies import make_policy, policy_class
from drivers.vgpu.policies.base import SharingPolicy
from drivers.vgpu.sharing.sim import Simulation


def _us(key: str, to: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    return lambda p: {to: int(p[key]) * 1000} if key in p else {}


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in str(text).split(",") if x.strip())


#: Module parameters -> policy keyword arguments, per policy.
PARAMETERS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "timeslice": _us("slice_us", "slice_ns"),
    "mps": lambda p: {},
    "mps-limit": lambda p: (
        {"percentages": _floats(p["percentages"])} if p.get("percentages") else {}
    ),
    "priority": lambda p: {},
    "mig": lambda p: (
        {"slices": tuple(int(x) for x in _floats(p["slices"]))} if p.get("slices") else {}
    ),
    "tgs": lambda p: {
        **_us("period_us", "period_ns")(p),
        **({"threshold": float(p["threshold"])} if "threshold" in p else {}),
    },
    "reef": lambda p: {"batch_depth": int(p["batch_depth"])} if "batch_depth" in p else {},
    "orion": lambda p: _us("duration_cap_us", "duration_cap_ns")(p),
    "lithos": lambda p: {
        **_us("atom_max_us", "atom_max_ns")(p),
        **{
            k: p[k]
            for k in ("max_stolen", "stealing", "rightsizing", "rightsizing_fit", "dvfs", "slip")
            if k in p
        },
    },
}


def policy_kwargs(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Policy `name`'s keyword arguments from a module's parameters.

    An unknown name is an `UnknownPolicy` error; a malformed value, ValueError."""
    policy_class(name)
    return PARAMETERS[name](params)


def policy_module(name: str) -> str:
    """The MLaaS module that selects policy `name` (``mps-limit``: ``gpu_mps_limit``)."""
    policy_class(name)
    return "gpu_" + name.replace("-", "_")


class _Device:
    """What a power advisor sees of the device."""

    def __init__(self, sim: Simulation) -> None:
        spec = sim.spec
        self.clocks_mhz = list(spec.clocks_mhz)
        self.clock_mhz = sim.gpu.clock_mhz
        self.busy_tpcs = sim.gpu.busy_tpcs
        self.n_tpcs = spec.n_tpcs
        self.power_w = sim.gpu.power_w


def follow_advisors(
    sim: Simulation, mlaas: Any, period_ns: int = 10_000_000, default: str = "mps"
) -> None:
    """Make `sim` follow the GPU and power advisors attached to `mlaas` (see the module doc)."""
    state: dict[str, Any] = {"wanted": None, "clock": None}

    def look() -> None:
        wanted = (default, {})
        selected = mlaas.gpu.sharing_policy()  # checked: a bad name ejects the advisor
        if selected is not None:
            try:
                wanted = (selected[0], policy_kwargs(*selected))
            except ValueError as exc:  # an unknown policy, or malformed parameters
                mlaas.gpu.refuse_policy(f"the simulation cannot run it: {exc}")
        key = (wanted[0], tuple(sorted(wanted[1].items())))
        if key != state["wanted"]:
            state["wanted"] = key
            policy: SharingPolicy = make_policy(wanted[0], **wanted[1])
            if sim.running:
                sim.set_policy(policy)
            else:
                sim.policy = policy
        clock = mlaas.gpu.frequency(_Device(sim))
        if clock is not None and clock != state["clock"]:
            state["clock"] = clock
            sim.set_clock(clock)
        sim.call_at(sim.now_ns + period_ns, look)

    look()

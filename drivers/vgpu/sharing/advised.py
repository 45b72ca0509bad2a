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
parameters; this file is where the driver turns them into a mechanism, by
the policy's own declaration of its parameters (`SharingPolicy.PARAMETERS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drivers.vgpu.policies import make_policy, policy_class
from drivers.vgpu.sharing.policy import SharingPolicy
from drivers.vgpu.sharing.sim import Simulation


def policy_kwargs(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Policy `name`'s keyword arguments from a module's parameters.

    The policy declares them (`SharingPolicy.PARAMETERS`).  An unknown name
    is an `UnknownPolicy` error; a malformed value, ValueError."""
    return policy_class(name).keywords(params)


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
        wanted: tuple[str, dict[str, Any]] = (default, {})
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

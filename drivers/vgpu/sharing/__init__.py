"""The sharing harness: what runs a sharing policy on the virtual GPU (`drivers/vgpu/sharing`).

The policies themselves live in `drivers/vgpu/policies`; this folder is
everything around them.  A policy imports only what it is and sees
(policy.py, compiled.py) and the registry; the rest imports the policies:

| file           | what it holds                                                       |
| -------------- | ------------------------------------------------------------------- |
| policy.py      | `SharingPolicy`: what every policy is, its parameters, Python hooks |
| compiled.py    | what a policy's callbacks see: the loop's tables, `launch`, state   |
| epoch.py       | the one loop: run compiled by numba, or the same source interpreted |
| epoch_run.py   | `LoopRun`: a simulation's tables, its Python timers, its modes      |
| program_run.py | `ProgramRun`: the booted driver's streams and kernels, recycled     |
| sim.py         | `Simulation`: tenants' request streams replayed in the loop         |
| stream.py      | what a stream's current kernel implies; Orion's kernel profile      |
| registry.py    | the shipped policies, one line each; it generates dispatch.py       |
| dispatch.py    | generated: calls the callbacks of the policy in charge              |
| python_policy.py | a researcher's Python policy in the same loop, interpreted        |
| arrivals.py    | request arrival processes for open-loop tenants (Poisson, traces)   |
| advised.py     | the one advisor follower: a running simulation on the MLaaS advisors |
| modules.py     | the policies' `gpu_<policy>` MLaaS modules, written from the policies |

The experiments (`exp/`) drive `Simulation`; the booted vGPU driver
(`drivers/vgpu/scheduler.py`) drives `ProgramRun`.  Both run only the
policies' callbacks, in the one loop.
"""

from typing import Any

#: What the package offers, and the module of each: loaded when first asked
#: for, so the policies can import `compiled` and `policy` from here while
#: the simulation imports the policies.
_EXPORTS = {
    "RunResult": "sim", "Simulation": "sim", "Tenant": "sim",
}  # fmt: skip

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

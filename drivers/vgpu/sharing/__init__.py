"""The sharing harness: what runs a sharing policy on the virtual GPU (`drivers/vgpu/sharing`).

The policies themselves live in `drivers/vgpu/policies`; this folder is
everything around them, and it imports them, never the other way round:

| file        | what it holds                                                          |
| ----------- | ---------------------------------------------------------------------- |
| device.py   | `SharedDevice` and `DeviceStream`: the booted driver's device          |
| recorder.py | `Recorder`: trace window, launch and clock logs, per-atom figures      |
| sim.py      | `Simulation`: tenants' request streams replayed on a `SharedDevice`    |
| epoch.py    | the one loop: run compiled by numba, or the same source interpreted    |
| epoch_run.py| a simulation's tables for that loop, its Python timers, its modes      |
| registry.py | the compiled policies, one line each; it generates dispatch.py         |
| dispatch.py | generated: calls the callbacks of the policy in charge                  |
| python_policy.py | a researcher's Python policy in the same loop, interpreted        |
| arrivals.py | request arrival processes for open-loop tenants (Poisson, real traces) |
| advised.py  | the one advisor follower: a running simulation on the MLaaS advisors   |
| modules.py  | the policies' `gpu_<policy>` MLaaS modules, written from the policies  |

The experiments (`exp/`) drive `Simulation`, which runs only in the loop.
The booted vGPU driver (`drivers/vgpu/scheduler.py`) still runs the
policies' Python classes on a `SharedDevice` (device.py); moving it onto
the loop is what remains before those classes can go.
"""

from drivers.vgpu.sharing.device import DeviceStream, SharedDevice
from drivers.vgpu.sharing.sim import RunResult, Simulation, Tenant

__all__ = ["DeviceStream", "RunResult", "SharedDevice", "Simulation", "Tenant"]

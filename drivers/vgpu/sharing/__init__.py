"""The sharing harness: what runs a sharing policy on the virtual GPU (`drivers/vgpu/sharing`).

The policies themselves live in `drivers/vgpu/policies`; this folder is
everything around them, and it imports them, never the other way round:

| file        | what it holds                                                          |
| ----------- | ---------------------------------------------------------------------- |
| device.py   | `SharedDevice` and `DeviceStream`: the vGPU as a policy sees it        |
| sim.py      | `Simulation`: tenants' request streams replayed on a `SharedDevice`    |
| epoch.py    | the compiled epoch loop: sim.py and device.py's loop, in numba         |
| epoch_run.py| a simulation's tables for that loop, its Python timers, the hand-back  |
| arrivals.py | request arrival processes for open-loop tenants (Poisson, real traces) |
| advised.py  | the one advisor follower: a running simulation on the MLaaS advisors   |
| modules.py  | the policies' `gpu_<policy>` MLaaS modules, written from the policies  |

The booted vGPU driver (`drivers/vgpu/scheduler.py`) is the other owner of
a `SharedDevice`; the experiments (`exp/`) drive `Simulation`.
"""

from drivers.vgpu.sharing.device import DeviceStream, SharedDevice
from drivers.vgpu.sharing.sim import RunResult, Simulation, Tenant

__all__ = ["DeviceStream", "RunResult", "SharedDevice", "Simulation", "Tenant"]

"""GPU sharing policies on the virtual GPU (`drivers/vgpu/policies`).

Nine ways for tenants to share one GPU, each a `SharingPolicy` (base.py)
in charge of a device: the experiments' `Simulation`, or the booted vGPU
driver (`drivers/vgpu/scheduler.py`).  This folder holds the policies only;
the harness that runs one (`drivers/vgpu/sharing`) imports them, never the
other way round.

| policy      | file          | how it shares the GPU                                     |
| ----------- | ------------- | --------------------------------------------------------- |
| `timeslice` | timeslice.py  | contexts take turns in slices of a few hundred us         |
| `mps`       | mps.py        | one shared space, first launched first served            |
| `mps-limit` | mps.py        | an active-thread percentage caps each context's TPCs      |
| `priority`  | priority.py   | high priority first among pending blocks, no eviction     |
| `mig`       | mig.py        | static partitions at GPC granularity                      |
| `tgs`       | tgs.py        | best-effort launch rate under slow start and AIMD         |
| `reef`      | reef.py       | best-effort kernels padded around high-priority ones      |
| `orion`     | orion.py      | best-effort admission by SMs, profile and duration        |
| `lithos`    | lithos.py     | TPC quotas, stealing, atoms, right-sizing, DVFS           |

Each policy also has a compiled form beside its class (`compiled.py`
says what one sees of the device; LithOS's is `lithos_compiled.py`), which
the simulation's compiled epoch loop runs; the tests hold the two forms
to identical atom logs.

`make_policy("lithos", rightsizing=True)` builds one by name; an unknown
name is an `UnknownPolicy` error that lists the known ones.
"""

from __future__ import annotations

from typing import Any

from drivers.vgpu.errors import InvalidArgument
from drivers.vgpu.policies.base import SharingPolicy
from drivers.vgpu.policies.lithos import Lithos
from drivers.vgpu.policies.mig import Mig
from drivers.vgpu.policies.mps import Mps, MpsLimit
from drivers.vgpu.policies.orion import Orion
from drivers.vgpu.policies.priority import Priority
from drivers.vgpu.policies.reef import Reef
from drivers.vgpu.policies.tgs import Tgs
from drivers.vgpu.policies.timeslice import Timeslice

POLICIES: dict[str, type[SharingPolicy]] = {
    cls.name: cls for cls in (Timeslice, Mps, MpsLimit, Priority, Mig, Tgs, Reef, Orion, Lithos)
}
POLICY_NAMES = tuple(POLICIES)


class UnknownPolicy(InvalidArgument):
    """A policy name that is not one of `POLICY_NAMES`."""


def policy_class(name: str) -> type[SharingPolicy]:
    cls = POLICIES.get(name)
    if cls is None:
        raise UnknownPolicy(f"unknown policy {name!r}; known policies: {', '.join(POLICY_NAMES)}")
    return cls


def make_policy(name: str, **params: Any) -> SharingPolicy:
    """A fresh policy `name` with `params` (its constructor's keyword arguments)."""
    cls = policy_class(name)
    try:
        return cls(**params)
    except TypeError as err:
        raise InvalidArgument(f"policy {name!r}: {err}") from None


__all__ = [
    "POLICIES", "POLICY_NAMES", "SharingPolicy", "UnknownPolicy", "make_policy", "policy_class",
]  # fmt: skip

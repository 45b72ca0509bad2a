"""GPU sharing policies on the virtual GPU (`drivers/vgpu/policies`).

Nine ways for tenants to share one GPU, each a `SharingPolicy` (`sharing/policy.py`)
in charge of a device: the experiments' `Simulation`, or the booted vGPU
driver (`drivers/vgpu/scheduler.py`).  This folder holds the policies only.
Of the harness that runs one (`drivers/vgpu/sharing`) they import what a
policy is and sees (`policy.py`, `compiled.py`), and this package imports
the registry that lists them (`registry.py`, one line per file; `POLICIES`
follows its order); the rest of the harness imports them, never the other
way round.

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

Each policy is written once, in its file: a class that declares its name,
parameters and state (`compiled_setup`), and the callbacks the one loop
runs, compiled or interpreted (`sharing/compiled.py` says what they see
of the device).  `default.py` is the booted driver's default, not one of
the policies a user selects.

`make_policy("lithos", rightsizing=True)` builds one by name; an unknown
name is an `UnknownPolicy` error that lists the known ones.
"""

from __future__ import annotations

from typing import Any

from drivers.vgpu.errors import InvalidArgument
from drivers.vgpu.sharing import registry
from drivers.vgpu.sharing.policy import SharingPolicy

#: Each policy by name, in the registry's order (`sharing/registry.py`'s `POLICY_FILES`).
POLICIES: dict[str, type[SharingPolicy]] = {cls.name: cls for cls in registry.policy_classes()}
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

"""MLaaS: hot-loadable advisor modules for the kernel's policies (MaLV-OS §3).

This package is the whole API a module sees::

    from kernel.mlaas import MemoryAdvisor

    class Lru(MemoryAdvisor):
        name = "lru"
        def on_access(self, frame, pid, vpn): ...
        def select_victim(self, candidates): ...

The bases (`advisors.py`) define the callbacks; the context each advisor
gets (`context.py`) offers kernel-space inference (`inference.py`), the
feature store (`features.py`) and a logger.  `learn.py` has small online
learners that modules may use.  The kernel side — loading, validation,
bindings to the hook points, faults and the watchdogs — is `loader.py`,
`core.py`, `bindings.py` and `faults.py`.

The numpy-backed names (`Model`, `FeatureStore`, the learners) load on first
use, so a kernel that never runs a model never imports numpy.
"""

from __future__ import annotations

from typing import Any

from kernel.mlaas.advisors import (
    API_VERSION,
    BASES,
    Advisor,
    GpuAdvisor,
    MemoryAdvisor,
    PowerAdvisor,
    SchedAdvisor,
)
from kernel.mlaas.context import AdvisorContext, MemoryView, SchedView, TaskView
from kernel.mlaas.faults import ExitReport, ModuleError

_LAZY = {
    "Model": "kernel.mlaas.inference",
    "InferenceError": "kernel.mlaas.inference",
    "WeightShapeError": "kernel.mlaas.inference",
    "CpuBackend": "kernel.mlaas.inference",
    "InferenceBackend": "kernel.mlaas.inference",
    "FeatureStore": "kernel.mlaas.features",
    "FeatureError": "kernel.mlaas.features",
    "RecursiveLeastSquares": "kernel.mlaas.learn",
    "MlpTrainer": "kernel.mlaas.learn",
}

__all__ = [
    "API_VERSION", "BASES", "Advisor", "AdvisorContext", "ExitReport", "GpuAdvisor", "MemoryAdvisor",
    "MemoryView", "ModuleError", "PowerAdvisor", "SchedAdvisor", "SchedView", "TaskView", *_LAZY,
]  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kernel.mlaas' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)

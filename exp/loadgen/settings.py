"""What one `malv serve --loadgen` run is: the scenario, the model, the
policy and the co-located load (`exp/loadgen`).

`ServeSettings` is validated at the edge, as the kernel's config is: a bad
value is refused here with a message naming the option, before any kernel
boots or LoadGen starts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import attrs

from drivers.vgpu.traces import is_profile_path

SCENARIOS = ("Server", "SingleStream", "MultiStream", "Offline")
#: The co-located best-effort programs: gpu-burn, or a model's training
#: iterations (``train:MODEL``, a profile path or a preset).
TRAIN_PREFIX = "train:"
GPU_MODULES_DIR = Path(__file__).resolve().parents[2] / "mlaas_modules"
DEFAULT_MODEL = "resnet50_b4_inference"


class SettingsError(ValueError):
    """A serve setting was refused; the message names the option."""


def gpu_policies() -> tuple[str, ...]:
    """The policies a GPU advisor module selects: mlaas_modules/gpu_NAME.py -> NAME."""
    return tuple(sorted(p.stem[4:] for p in GPU_MODULES_DIR.glob("gpu_*.py")))


def policy_module(policy: str) -> str:
    """The GPU advisor module that selects `policy` (``mps-limit`` -> gpu_mps_limit)."""
    name = policy.removeprefix("gpu_").replace("-", "_")
    if name not in gpu_policies():
        known = ", ".join(p.replace("_", "-") for p in gpu_policies())
        raise SettingsError(f"--policy: no GPU advisor selects {policy!r}; choose from {known}")
    return f"gpu_{name}"


def _positive(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise SettingsError(f"{attribute.name} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise SettingsError(f"{attribute.name} must be finite, got {value!r}")


def _count(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if type(value) is not int or value < 1:
        raise SettingsError(f"{attribute.name} must be a positive integer, got {value!r}")


def _percentile(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 100:
        raise SettingsError(f"{attribute.name} must be a percent within (0, 100), got {value!r}")


def _scenario(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value not in SCENARIOS:
        raise SettingsError(f"scenario must be one of {', '.join(SCENARIOS)}, got {value!r}")


def _colocate(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    for item in value:
        if item != "gpu-burn" and not (item.startswith(TRAIN_PREFIX) and item[len(TRAIN_PREFIX) :]):
            raise SettingsError(
                f"colocate: {item!r} is neither gpu-burn nor train:MODEL (a profile or a preset)"
            )


def _policy(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None:
        policy_module(value)


@attrs.frozen
class ServeSettings:
    """One LoadGen run against a booted realtime kernel.

    Latencies are LoadGen's, in wall time.  `sample_models` names the model
    each QSL sample asks for (default: every sample asks for `model`), so a
    run can send queries for a model the server did not load.
    """

    scenario: str = attrs.field(default="Server", validator=_scenario)
    model: str = DEFAULT_MODEL
    policy: str | None = attrs.field(default="lithos", validator=_policy)
    qps: float = attrs.field(default=20.0, validator=_positive)
    latency_bound_ms: float = attrs.field(default=50.0, validator=_positive)
    latency_percentile: float = attrs.field(default=90.0, validator=_percentile)
    min_duration_s: float = attrs.field(default=10.0, validator=_positive)
    min_queries: int = attrs.field(default=100, validator=_count)
    colocate: tuple[str, ...] = attrs.field(default=(), converter=tuple, validator=_colocate)
    #: A query unanswered this long after LoadGen issued it is answered as failed.
    query_timeout_s: float = attrs.field(default=2.0, validator=_positive)
    #: The vGPU driver's shortest wait between wakes for callers (server.py's
    #: WAKE_US): a query's completion reaches the server up to this late.
    driver_wake_us: float = attrs.field(default=500.0, validator=_positive)
    gpu: str = "a100"
    seed: int = 0
    samples: int = attrs.field(default=64, validator=_count)
    sample_models: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    #: Queries the server runs at once, each on a GPU stream of its own.
    server_streams: int = attrs.field(default=1, validator=_count)
    #: The server program's name in the program table (tests name a faulty one).
    server: str = "inference-server"

    def timeout_s(self) -> float:
        """How long a query may wait for its answer: `query_timeout_s`; in
        Offline, where LoadGen issues every query at once, plus twice the
        time its queries take at the expected rate (LoadGen issues the
        larger of the minimum count and 1.1 times rate times duration)."""
        if self.scenario != "Offline":
            return self.query_timeout_s
        queries = max(self.min_queries, 1.1 * self.qps * self.min_duration_s)
        return self.query_timeout_s + 2 * queries / self.qps

    def model_of(self, sample_index: int) -> str:
        """The model a QSL sample asks for (by name, as the server knows it)."""
        if self.sample_models:
            return self.sample_models[sample_index % len(self.sample_models)]
        return model_name(self.model)


def model_name(spec: str) -> str:
    """The name the server knows a model by: a profile's file stem, or the preset."""
    return Path(spec).stem if is_profile_path(spec) else spec

"""Scenario files: who shares the GPU in a colocation experiment (`malv exp`).

A scenario is a TOML file that names the tenants: for each, its model (a
built-in model, or any Orion-format profile by path), batch, kind
(inference or training), priority, arrival process and SLO.  `stacking`
and `hybrid` are shipped scenarios (`exp/scenarios/`); `--scenario FILE`
runs any other, and `malv exp sweep` sweeps one over load, seed and slip::

    title = "Inference stacking"
    [[tenants]]
    name = "HP A"
    model = "resnet50"            # or profile = "../shared/workloads/orion/x.csv"
    batch = 4
    kind = "inference"            # inference | training
    priority = "high"             # high | best-effort
    arrivals = "poisson"          # poisson | closed | file
    rate_per_s = 20.8             # poisson;  file: file = "...", offset_s, speedup
    slo_factor = 2.0              # or slo_ms; times its isolated request time
    sized = true                  # quota by LithOS's slip rule; else weight
    measured_on = "v100"          # the GPU the profile was measured on

`measured_on` (a GPU preset: a100, h100, v100) may also stand at the top,
for every tenant.  Left out, a profile is Orion's, measured on a V100, and
a built-in model is drawn for the GPU simulated (--trace-dir: its Orion
profile, a V100's).  Durations measured on another GPU than the one
simulated are carried to it by the model of `drivers.vgpu.traces.carry_to`.

Every mistake (an unknown key, a value of the wrong type or out of range, a
missing file) is an `InvalidArgument` of one line naming the file and the key.
A relative path in a scenario is read from the scenario file's directory,
so a scenario runs the same from any directory.
"""

from __future__ import annotations

import argparse
import math
import os
import tomllib
from pathlib import Path
from typing import Any

import attrs

from drivers.vgpu.errors import InvalidArgument
from drivers.vgpu.presets import PRESETS
from exp.sharing.catalogue import CATALOGUE
from exp.sharing.tenants import Role

#: The shipped scenarios, by name.
SHIPPED = Path(__file__).parent / "scenarios"

TOP_KEYS = {"title", "description", "duration_s", "tenants", "measured_on"}
TENANT_KEYS = {
    "name", "model", "profile", "batch", "kind", "priority", "arrivals", "rate_per_s", "file",
    "offset_s", "speedup", "slo_ms", "slo_factor", "sized", "weight", "measured_on",
}  # fmt: skip
ARRIVALS = ("poisson", "closed", "file")


@attrs.frozen
class Scenario:
    """Tenants sharing one GPU, as a scenario file names them."""

    name: str
    title: str
    roles: tuple[Role, ...]
    description: str = ""
    #: The default simulated seconds per run of a sweep.
    duration_s: float | None = None
    path: str = ""


def shipped(name: str) -> Path:
    return SHIPPED / f"{name}.toml"


def scenario_option(p: argparse.ArgumentParser, name: str) -> None:
    """--scenario FILE, defaulting to the shipped scenario `name`."""
    p.add_argument(
        "--scenario",
        default=str(shipped(name)),
        help=f"a scenario file (TOML) naming the tenants (default: the shipped {name}.toml)",
    )


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; one-line `InvalidArgument` on any mistake."""
    path = Path(path)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InvalidArgument(f"{path}: cannot read the scenario: {err.strerror or err}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise InvalidArgument(f"{path}: not a TOML file: {err}") from None
    return parse_scenario(table, str(path))


def parse_scenario(table: dict[str, Any], where: str) -> Scenario:
    _known(table, TOP_KEYS, where)
    tenants = table.get("tenants")
    if not isinstance(tenants, list) or not tenants:
        raise InvalidArgument(f"{where}: needs at least one [[tenants]] table")
    base = Path(where).parent
    device = _device(table, where, None)
    roles = tuple(_role(t, f"{where}: tenants[{i}]", base, device) for i, t in enumerate(tenants))
    names = [r.name for r in roles]
    if len(set(names)) != len(names):
        raise InvalidArgument(f"{where}: tenant names repeat: {', '.join(names)}")
    if not any(r.kind != "be" for r in roles):
        raise InvalidArgument(f"{where}: needs a high-priority tenant to measure")
    duration = table.get("duration_s")
    if duration is not None:
        duration = _positive(table, "duration_s", where)
    return Scenario(
        name=Path(where).stem,
        title=_text(table, "title", where, Path(where).stem),
        roles=roles,
        description=_text(table, "description", where, ""),
        duration_s=duration,
        path=where,
    )


def _role(t: Any, where: str, base: Path, device: str | None) -> Role:
    if not isinstance(t, dict):
        raise InvalidArgument(f"{where}: must be a table of keys")
    _known(t, TENANT_KEYS, where)
    name = _text(t, "name", where, None)
    model, profile = t.get("model"), t.get("profile")
    if (model is None) == (profile is None):
        raise InvalidArgument(f"{where}: give exactly one of model (built in) or profile (a path)")
    if model is not None and model not in CATALOGUE:
        raise InvalidArgument(f"{where}.model: unknown {model!r}; known: {', '.join(CATALOGUE)}")
    if profile is not None:
        profile = _path(t, "profile", where, base)
    kind = _choice(t, "kind", ("inference", "training"), "inference", where)
    priority = _choice(t, "priority", ("high", "best-effort"), "high", where)
    arrivals = _choice(t, "arrivals", ARRIVALS, "closed", where)
    if arrivals != "closed" and priority != "high":
        raise InvalidArgument(f"{where}: a best-effort tenant runs closed loop (arrivals)")
    _only_with(t, arrivals, {"poisson": {"rate_per_s"}, "file": {"file", "offset_s", "speedup"}},
               where)  # fmt: skip
    file = None
    if arrivals == "file":
        file = _path(t, "file", where, base)
    if "slo_ms" in t and "slo_factor" in t:
        raise InvalidArgument(f"{where}: give one of slo_ms or slo_factor")
    sized = t.get("sized", False)
    if not isinstance(sized, bool):
        raise InvalidArgument(f"{where}.sized: must be true or false, got {sized!r}")
    return Role(
        name=name,
        model=model or "",
        kind="be" if priority == "best-effort" else ("closed" if arrivals == "closed" else "open"),
        weight=_positive(t, "weight", where, 1.0),
        sized=sized,
        profile=profile,
        batch=_batch(t, where),
        training=kind == "training",
        rate_per_s=_positive(t, "rate_per_s", where, None) if arrivals == "poisson" else None,
        arrival_file=file,
        arrival_offset_s=_nonnegative(t, "offset_s", where),
        arrival_speedup=_positive(t, "speedup", where, 1.0),
        slo_ms=_positive(t, "slo_ms", where, None),
        slo_factor=_positive(t, "slo_factor", where, 2.0),
        measured_on=_device(t, where, device),
    )


# -- one check per kind of value, each a one-line error naming the key ---------------


def _known(table: dict, keys: set[str], where: str) -> None:
    unknown = sorted(set(table) - keys)
    if unknown:
        raise InvalidArgument(
            f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(keys))}"
        )


def _only_with(t: dict, arrivals: str, owned: dict[str, set[str]], where: str) -> None:
    for kind, keys in owned.items():
        stray = sorted(keys & set(t)) if kind != arrivals else []
        if stray:
            raise InvalidArgument(f"{where}.{stray[0]}: only for arrivals = {kind!r}")


def _text(t: dict, key: str, where: str, default: str | None) -> str:
    if key not in t and default is not None:
        return default
    value = t.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(f"{where}.{key}: must be a non-empty string, got {value!r}")
    return value


def _path(t: dict, key: str, where: str, base: Path) -> str:
    """A file the scenario names, relative to the scenario's own directory (`base`)."""
    text = _text(t, key, where, None)
    path = os.path.normpath(base / text)
    if not Path(path).is_file():
        raise InvalidArgument(f"{where}.{key}: {text}: no such file (read as {path})")
    return path


def _device(t: dict, where: str, default: str | None) -> str | None:
    """`measured_on`: a GPU preset's name."""
    if "measured_on" not in t:
        return default
    value = t["measured_on"]
    if value not in PRESETS:
        raise InvalidArgument(
            f"{where}.measured_on: must be one of {', '.join(PRESETS)}, got {value!r}"
        )
    return value


def _choice(t: dict, key: str, choices: tuple[str, ...], default: str, where: str) -> str:
    value = t.get(key, default)
    if value not in choices:
        raise InvalidArgument(f"{where}.{key}: must be one of {', '.join(choices)}, got {value!r}")
    return value


def _number(t: dict, key: str, where: str) -> float:
    value = t[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgument(f"{where}.{key}: must be a finite number, got {value!r}")
    return float(value)


def _positive(t: dict, key: str, where: str, default: float | None = None) -> Any:
    if key not in t:
        if default is None and key == "rate_per_s":
            raise InvalidArgument(f"{where}.rate_per_s: Poisson arrivals need a rate")
        return default
    value = _number(t, key, where)
    if value <= 0:
        raise InvalidArgument(f"{where}.{key}: must be positive, got {t[key]!r}")
    return value


def _nonnegative(t: dict, key: str, where: str) -> float:
    if key not in t:
        return 0.0
    value = _number(t, key, where)
    if value < 0:
        raise InvalidArgument(f"{where}.{key}: must be 0 or more, got {t[key]!r}")
    return value


def _batch(t: dict, where: str) -> int | None:
    value = t.get("batch")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidArgument(f"{where}.batch: must be a positive integer, got {value!r}")
    return value

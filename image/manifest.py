"""Image manifests: what an image holds, read from ``image/*.toml``.

A manifest is the one description of an image.  `malv build` reads it from
the source tree to choose the files an image holds (image/builder.py); the
image reads its own copy at boot to make its kernel (image/runtime.py).  It
names the kernel config, the boot plan (the drivers), the userland programs,
the MLaaS modules (preloaded or only available), the guest VMs and an init
script of shell commands.

A manifest is checked at the edge: every refusal is a `ManifestError` of one
line that names the file, the key, and what was expected.  Programs and
modules are checked against a `Catalog`, what the source tree (or the image)
offers.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import attrs

from kernel.config import BootPlan, ConfigError, KernelConfig, ServerSpec

#: The programs every image needs: init, and the shell it starts.
REQUIRED_PROGRAMS = ("init", "sh")
#: The host side of a guest's vGPU, which a VM with a gpu share needs.
VM_GPU_PROGRAMS = ("vgpu-front", "vgpu-backend")
KERNEL_KEYS = ("cpus", "frames", "seed", "slice_ns", "trap_cost_ns", "gpu")
PARAM_TYPES = (bool, int, float, str)


class ManifestError(ValueError):
    """A manifest was refused; the message (one line) names the file and the key."""


@attrs.frozen
class Catalog:
    """What an image can be made of: programs (name -> ``module:function``,
    as pyproject's ``malvos.programs`` entry points list them) and the names
    of the MLaaS modules."""

    programs: dict[str, str]
    modules: frozenset[str]


@attrs.frozen
class ModuleSpec:
    """An MLaaS module in the image: preloaded at boot with `params` when
    `load`, else only available to `insmod`."""

    name: str
    load: bool = True
    params: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class VmSpec:
    """A guest VM the image starts at boot."""

    name: str
    gpu_share: int = 0
    allowed_modules: tuple[str, ...] = ()
    cpus: int = 2
    frames: int = 2048


@attrs.frozen
class Manifest:
    """A checked manifest: `config` is the host kernel's `KernelConfig`."""

    name: str
    description: str
    config: KernelConfig
    programs: tuple[str, ...]
    modules: tuple[ModuleSpec, ...] = ()
    vms: tuple[VmSpec, ...] = ()
    init: tuple[str, ...] = ()

    @property
    def gpu(self) -> str | None:
        return self.config.gpu

    def program_table(self, catalog: Catalog) -> dict[str, str]:
        """The image's program table: every program it holds -> ``module:function``."""
        return {name: catalog.programs[name] for name in self.programs}


# -- reading -------------------------------------------------------------------


def load(path: str | Path, catalog: Catalog) -> Manifest:
    """The manifest in the file at `path`, checked against `catalog`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    return loads(data, str(path), catalog)


def loads(data: bytes, file: str, catalog: Catalog) -> Manifest:
    """The manifest in `data` (TOML), read from `file` (named in refusals)."""
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ManifestError(f"{file}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{file}: not TOML ({_one_line(exc)})") from None
    return parse(table, file, catalog)


def parse(table: Any, file: str, catalog: Catalog) -> Manifest:
    """The manifest in `table` (a TOML document, as `tomllib` reads it)."""
    return _Reader(file, catalog).manifest(table)


# -- the reader: one method per part of a manifest ------------------------------

TOP_KEYS = ("description", "programs", "init", "kernel", "servers", "modules", "vms")


class _Reader:
    def __init__(self, file: str, catalog: Catalog) -> None:
        self.file = file
        self.catalog = catalog

    def refuse(self, key: str, expected: str) -> ManifestError:
        return ManifestError(_one_line(f"{self.file}: {key}: {expected}"))

    def manifest(self, table: Any) -> Manifest:
        self.table(table, "manifest", TOP_KEYS)
        config = self.kernel(table.get("kernel", {}), self.servers(table))
        modules = self.modules(table.get("modules", []))
        programs = self.programs(table, config)
        vms = self.vms(table.get("vms", []), config, {m.name for m in modules})
        if any(vm.gpu_share for vm in vms):
            programs += tuple(p for p in VM_GPU_PROGRAMS if p not in programs)
        return Manifest(
            name=Path(self.file).stem,
            description=self.string(table.get("description", ""), "description"),
            config=config,
            programs=programs,
            modules=modules,
            vms=vms,
            init=self.strings(table.get("init", []), "init"),
        )

    # -- types

    def table(self, value: Any, key: str, known: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.refuse(key, f"expected a table, got {_show(value)}")
        for name in value:
            if name not in known:
                raise self.refuse(
                    f"{key}.{name}" if key != "manifest" else str(name),
                    f"unknown key; expected one of {', '.join(known)}",
                )
        return value

    def string(self, value: Any, key: str) -> str:
        if type(value) is not str or "\n" in value:
            raise self.refuse(key, f"expected a string of one line, got {_show(value)}")
        return value

    def strings(self, value: Any, key: str) -> tuple[str, ...]:
        if type(value) is not list:
            raise self.refuse(key, f"expected a list of strings, got {_show(value)}")
        return tuple(self.string(item, f"{key}[{i}]") for i, item in enumerate(value))

    def integer(self, value: Any, key: str, low: int, high: int) -> int:
        if type(value) is not int or not low <= value <= high:
            raise self.refuse(key, f"expected an integer from {low} to {high}, got {_show(value)}")
        return value

    def tables(self, value: Any, key: str) -> list[Any]:
        if type(value) is not list:
            raise self.refuse(key, f"expected an array of tables ([[{key}]]), got {_show(value)}")
        return value

    # -- parts

    def kernel(self, value: Any, plan: BootPlan | None) -> KernelConfig:
        settings = dict(self.table(value, "kernel", KERNEL_KEYS))
        if settings.get("gpu") == "none":
            settings["gpu"] = None
        elif "gpu" in settings and type(settings["gpu"]) is not str:
            raise self.refuse(
                "kernel.gpu", f"expected a preset or 'none', got {_show(settings['gpu'])}"
            )
        if plan is not None:
            settings["plan"] = plan
        try:
            return KernelConfig(**settings)
        except ConfigError as exc:
            field = str(exc).split(" ", 1)[0].rstrip(":")
            key = "servers" if field == "plan" else f"kernel.{field}"
            raise self.refuse(key, str(exc)) from None

    def servers(self, table: dict[str, Any]) -> BootPlan | None:
        """The boot plan; without `[[servers]]`, the standard one for the GPU."""
        if "servers" not in table:
            return None
        specs = []
        for i, server in enumerate(self.tables(table["servers"], "servers")):
            key = f"servers[{i}]"
            server = self.table(server, key, ("name", "program", "args", "devices"))
            for field in ("args", "devices"):
                self.strings(server.get(field, []), f"{key}.{field}")
            try:
                specs.append(ServerSpec(**server))
            except (ConfigError, TypeError) as exc:
                raise self.refuse(key, _one_line(exc)) from None
        try:
            return BootPlan(tuple(specs))
        except ConfigError as exc:
            raise self.refuse("servers", str(exc)) from None

    def programs(self, table: dict[str, Any], config: KernelConfig) -> tuple[str, ...]:
        if "programs" not in table:
            raise self.refuse("programs", "missing; expected the list of userland programs")
        programs = self.strings(table["programs"], "programs")
        for i, name in enumerate(programs):
            if name not in self.catalog.programs:
                raise self.refuse(
                    f"programs[{i}]",
                    f"no program named {name!r}; expected one of "
                    f"{', '.join(sorted(self.catalog.programs))}",
                )
        for name in REQUIRED_PROGRAMS:
            if name not in programs:
                raise self.refuse(
                    "programs", f"expected {name!r} among them (every image boots it)"
                )
        servers = tuple(s.program for s in config.plan.servers if s.program not in programs)
        for name in servers:
            if name not in self.catalog.programs:
                raise self.refuse("servers", f"no program named {name!r} for a server")
        return tuple(dict.fromkeys(programs + servers))

    def modules(self, value: Any) -> tuple[ModuleSpec, ...]:
        specs = []
        for i, module in enumerate(self.tables(value, "modules")):
            key = f"modules[{i}]"
            module = self.table(module, key, ("name", "load", "params"))
            if "name" not in module:
                raise self.refuse(f"{key}.name", "missing; expected a module name")
            name = self.string(module["name"], f"{key}.name")
            if name not in self.catalog.modules:
                raise self.refuse(
                    f"{key}.name",
                    f"no module named {name!r}; expected one of "
                    f"{', '.join(sorted(self.catalog.modules))}",
                )
            load = module.get("load", True)
            if type(load) is not bool:
                raise self.refuse(f"{key}.load", f"expected true or false, got {_show(load)}")
            params = module.get("params", {})
            if not isinstance(params, dict):
                raise self.refuse(f"{key}.params", f"expected a table, got {_show(params)}")
            for param, v in params.items():
                if type(v) not in PARAM_TYPES:
                    raise self.refuse(
                        f"{key}.params.{param}",
                        f"expected a boolean, integer, float or string, got {_show(v)}",
                    )
            specs.append(ModuleSpec(name, load, dict(params)))
        names = [s.name for s in specs]
        for name in names:
            if names.count(name) > 1:
                raise self.refuse("modules", f"module {name!r} is listed twice")
        return tuple(specs)

    def vms(self, value: Any, config: KernelConfig, modules: set[str]) -> tuple[VmSpec, ...]:
        specs = []
        for i, vm in enumerate(self.tables(value, "vms")):
            key = f"vms[{i}]"
            vm = self.table(vm, key, ("name", "gpu_share", "allowed_modules", "cpus", "frames"))
            if "name" not in vm:
                raise self.refuse(f"{key}.name", "missing; expected a vm name")
            name = self.string(vm["name"], f"{key}.name")
            if not name or not name.replace("-", "_").isidentifier():
                raise self.refuse(
                    f"{key}.name", f"expected letters, digits, '-', '_', got {name!r}"
                )
            share = self.integer(vm.get("gpu_share", 0), f"{key}.gpu_share", 0, 100)
            if share and config.gpu is None:
                raise self.refuse(
                    f"{key}.gpu_share", "expected 0: the host has no GPU (kernel.gpu)"
                )
            allowed = self.strings(vm.get("allowed_modules", []), f"{key}.allowed_modules")
            for module in allowed:
                if module not in modules:
                    raise self.refuse(
                        f"{key}.allowed_modules",
                        f"{module!r} is not in the image; expected a name from [[modules]]",
                    )
            cpus = self.integer(vm.get("cpus", 2), f"{key}.cpus", 1, 64)
            frames = self.integer(vm.get("frames", 2048), f"{key}.frames", 4, 1 << 20)
            specs.append(VmSpec(name, share, allowed, cpus, frames))
        names = [s.name for s in specs]
        for name in names:
            if names.count(name) > 1:
                raise self.refuse("vms", f"two vms are named {name!r}")
        return tuple(specs)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(value: Any) -> str:
    return " ".join(str(value).split())

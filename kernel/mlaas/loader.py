"""Finding, loading and validating MLaaS modules (what `insmod` does before attaching).

A module is a ``.py`` file or a package directory, named by a path or by a
name looked up in the kernel's module path (by default the `mlaas_modules`
directory).  Loading compiles it, runs its top-level code under the host
watchdog, and checks, before anything in the kernel changes:

* exactly one advisor class (a class of the module that derives from a base);
* a known base, and no callback of another base (the "wrong base" mistake);
* a supported API version and a valid `name`;
* every overridden callback is callable with the base's arguments;
* a declared per-call budget within limits, and parameters of simple types.

Every refusal is a `ModuleError` whose message says what is wrong.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import itertools
import os
import re
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from kernel.mlaas.advisors import (
    BASES,
    CALLBACKS,
    LIFECYCLE,
    MAX_BUDGET_US,
    SUPPORTED_API_VERSIONS,
    Advisor,
)
from kernel.mlaas.faults import CallbackTimeout, ModuleError, describe, describe_value

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
PARAM_TYPES = (bool, int, float, str)
_BASE_NAMES = ", ".join(b.__name__ for b in BASES.values())
_serial = itertools.count(1)


@attrs.frozen
class LoadedModule:
    """A module that loaded and passed validation; not attached yet.  What the
    kernel needs of its class is read once, checked, and kept here as plain
    values: a class attribute is never read twice (a metaclass could answer
    differently the second time)."""

    path: str
    digest: str
    cls: type[Advisor]
    kind: str
    module: types.ModuleType = attrs.field(repr=False)
    name: str
    api_version: int
    budget_us: float
    defaults: dict[str, Any]  # parameters and their defaults: names to bool, int, float, str
    doc: str


def default_search_path() -> list[str]:
    """The `mlaas_modules` directory, found without importing anything from it."""
    spec = importlib.util.find_spec("mlaas_modules")
    if spec is None or not spec.submodule_search_locations:
        return []
    return list(spec.submodule_search_locations)


def resolve(spec: str, search: Sequence[str]) -> str:
    """The file (or package directory) that `insmod SPEC` names."""
    if not isinstance(spec, str) or not spec:
        raise ModuleError("insmod needs a module name or a path")
    if os.sep in spec or spec.endswith(".py") or spec.startswith("."):
        path = os.path.abspath(os.path.expanduser(spec))
        if os.path.isdir(path):
            if not os.path.isfile(os.path.join(path, "__init__.py")):
                raise ModuleError(
                    f"{spec} is a directory without __init__.py, not a module package"
                )
            return path
        if not os.path.isfile(path):
            raise ModuleError(f"no such module file: {spec}")
        return path
    if not NAME_RE.match(spec):
        raise ModuleError(f"{spec!r} is not a module name (letters, digits, '_' and '-')")
    for directory in search:
        for candidate in (os.path.join(directory, f"{spec}.py"), os.path.join(directory, spec)):
            if os.path.isfile(candidate) or os.path.isfile(os.path.join(candidate, "__init__.py")):
                return candidate
    raise ModuleError(f"no module named {spec!r} in {', '.join(search) or 'an empty module path'}")


def shipped_path(name: str) -> str | None:
    """The shipped module (in `mlaas_modules/`) called `name`, if there is one."""
    for directory in default_search_path():
        for candidate in (os.path.join(directory, f"{name}.py"), os.path.join(directory, name)):
            if os.path.isfile(candidate) or os.path.isfile(os.path.join(candidate, "__init__.py")):
                return candidate
    return None


def origin(path: str) -> str:
    """``shipped`` for a module of `mlaas_modules/`, else its path."""
    real = os.path.realpath(path)
    for directory in default_search_path():
        if os.path.dirname(real.rstrip(os.sep)) == os.path.realpath(directory):
            return "shipped"
    return path


def sources(path: str) -> list[str]:
    """The module's source files (a package's, all of them)."""
    if os.path.isfile(path):
        return [path]
    found: list[str] = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        found.extend(os.path.join(root, f) for f in sorted(files) if f.endswith(".py"))
    return found


def digest(path: str) -> str:
    """A hash of the module's source, to tell whether it changed since loading."""
    h = hashlib.sha256()
    for source in sources(path):
        with open(source, "rb") as f:
            h.update(source.encode() + b"\0" + f.read())
    return h.hexdigest()[:16]


def _compile_check(path: str) -> None:
    for source in sources(path):
        try:
            with open(source, "rb") as f:
                compile(f.read(), source, "exec", dont_inherit=True)
        except SyntaxError as exc:
            where = os.path.basename(exc.filename or source)
            raise ModuleError(f"syntax error in {where} line {exc.lineno}: {exc.msg}") from None
        except (OSError, ValueError) as exc:
            raise ModuleError(f"cannot read {source}: {exc}") from None


def load(path: str, run: Callable[..., Any] | None = None) -> LoadedModule:
    """Compile and run the module at `path`, then validate it.  The caller runs
    this under the watchdog's guard, or passes the guard as `run` for the
    module's top level."""
    _compile_check(path)
    file = path if os.path.isfile(path) else os.path.join(path, "__init__.py")
    stem = os.path.splitext(os.path.basename(path.rstrip(os.sep)))[0]
    sys_name = f"_mlaas_{re.sub(r'[^A-Za-z0-9_]', '_', stem)}_{next(_serial)}"
    locations = None if os.path.isfile(path) else [path]
    spec = importlib.util.spec_from_file_location(
        sys_name, file, submodule_search_locations=locations
    )
    if spec is None or spec.loader is None:
        raise ModuleError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[sys_name] = module  # a package's relative imports need it
    try:
        if run is None:
            spec.loader.exec_module(module)
        else:
            run(spec.loader.exec_module, module)
    except ModuleError:
        forget(module)
        raise
    except BaseException as exc:
        forget(module)
        if isinstance(exc, CallbackTimeout):
            raise
        raise ModuleError(f"loading {os.path.basename(file)} raised {describe(exc)}") from None
    try:
        cls, kind = validate(module)
        name, api_version, budget_us, defaults = _identity(cls)
        _check_callbacks(cls, kind)
        doc = module.__doc__ or cls.__doc__ or ""
        doc = inspect.cleandoc(doc) if type(doc) is str else ""
    except ModuleError:
        forget(module)
        raise
    return LoadedModule(
        path, digest(path), cls, kind, module, name, api_version, budget_us, defaults, doc
    )


def forget(module: types.ModuleType) -> None:
    """Drop a loaded module (and its submodules) from sys.modules."""
    prefix = module.__name__ + "."
    for key in [k for k in sys.modules if k == module.__name__ or k.startswith(prefix)]:
        del sys.modules[key]


# -- validation -----------------------------------------------------------------------


def _defined_in(module: types.ModuleType) -> list[type]:
    own = module.__name__
    return [
        v for v in vars(module).values()
        if isinstance(v, type) and (v.__module__ == own or v.__module__.startswith(own + "."))
    ]  # fmt: skip


def validate(module: types.ModuleType) -> tuple[type[Advisor], str]:
    classes = _defined_in(module)
    advisors = [c for c in classes if issubclass(c, Advisor)]
    if not advisors:
        for c in classes:
            found = [cb for cbs in CALLBACKS.values() for cb in cbs if cb in vars(c)]
            if found:
                raise ModuleError(
                    f"class {c.__name__} defines advisor callbacks ({', '.join(found)}) but derives "
                    f"from {', '.join(b.__name__ for b in c.__bases__)}, not one of {_BASE_NAMES}"
                )
        raise ModuleError(f"the module defines no advisor class (one deriving from {_BASE_NAMES})")
    if len(advisors) > 1:
        names = ", ".join(sorted(c.__name__ for c in advisors))
        raise ModuleError(
            f"the module defines {len(advisors)} advisor classes ({names}); exactly one is allowed"
        )
    cls = advisors[0]
    kinds = [kind for kind, base in BASES.items() if issubclass(cls, base)]
    if len(kinds) != 1:
        raise ModuleError(
            f"class {cls.__name__} must derive from exactly one of {_BASE_NAMES}"
            + (f", not {len(kinds)}" if kinds else ", not from Advisor itself")
        )
    return cls, kinds[0]


def _identity(cls: type[Advisor]) -> tuple[str, int, float, dict[str, Any]]:
    """The class's name, API version, budget and parameters, each read once and checked."""
    name = cls.name
    if type(name) is not str or not name:
        raise ModuleError(f"class {cls.__name__} has no name (set the class attribute `name`)")
    if not NAME_RE.match(name):
        raise ModuleError(f"name {name!r} is not valid: letters, digits, '_' and '-', at most 32")
    version = cls.api_version
    if type(version) is not int or version not in SUPPORTED_API_VERSIONS:
        supported = ", ".join(str(v) for v in sorted(SUPPORTED_API_VERSIONS))
        raise ModuleError(
            f"API version {version!r} is not supported (this kernel supports {supported})"
        )
    budget = cls.budget_us
    if type(budget) not in (int, float) or not 0 < budget <= MAX_BUDGET_US:
        raise ModuleError(
            f"budget_us must be a number of microseconds in (0, {MAX_BUDGET_US:g}], got {budget!r}"
        )
    params = cls.params
    if not isinstance(params, Mapping):
        raise ModuleError(
            f"params must be a mapping of names to defaults, got {type(params).__name__}"
        )
    defaults = dict(params)
    for key, default in defaults.items():
        if type(key) is not str or not key.isidentifier():
            raise ModuleError(f"parameter name {describe_value(key)} is not an identifier")
        if type(default) not in PARAM_TYPES:
            raise ModuleError(
                f"parameter {key!r} has a default of type {type(default).__name__}; "
                "use bool, int, float or str"
            )
    return name, version, float(budget), defaults


def _check_callbacks(cls: type[Advisor], kind: str) -> None:
    base = BASES[kind]
    for other, names in CALLBACKS.items():
        if other == kind:
            continue
        for cb in names:
            if cb in CALLBACKS[kind]:
                continue
            if any(cb in vars(k) for k in cls.__mro__ if k not in BASES.values()):
                raise ModuleError(
                    f"class {cls.__name__} derives from {base.__name__} but defines {cb}, "
                    f"a {BASES[other].__name__} callback: wrong base"
                )
    for cb in CALLBACKS[kind] + LIFECYCLE:
        impl = getattr(cls, cb)
        reference = getattr(base, cb)
        if impl is reference:
            continue
        if not callable(impl):
            raise ModuleError(f"{cls.__name__}.{cb} is not callable")
        try:
            expected = list(inspect.signature(reference).parameters)[1:]
            inspect.signature(impl).bind(None, *expected)
        except TypeError:
            want = ", ".join(["self", *expected])
            raise ModuleError(f"{cls.__name__}.{cb} cannot be called as {cb}({want})") from None
        except ValueError:
            continue  # a builtin without a signature: it will be checked by the call


def convert_params(loaded: LoadedModule, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The module's parameters: its defaults, overridden by `given` (strings from insmod)."""
    values = dict(loaded.defaults)
    for key, raw in (given or {}).items():
        if key not in values:
            known = ", ".join(sorted(values)) or "none"
            raise ModuleError(f"{loaded.name} has no parameter {key!r} (parameters: {known})")
        values[key] = _convert(key, raw, values[key])
    return values


def _a(kind: type) -> str:
    """The type's name with its article: "an int", "a float"."""
    return f"{'an' if kind.__name__[0] in 'aeiou' else 'a'} {kind.__name__}"


def _convert(key: str, raw: Any, default: Any) -> Any:
    kind = type(default)
    if not isinstance(raw, str):
        if isinstance(raw, kind) and not (kind is int and isinstance(raw, bool)):
            return raw
        if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
            return float(raw)
        raise ModuleError(f"parameter {key} must be {_a(kind)}, got {raw!r}")
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ModuleError(f"parameter {key} must be true or false, got {raw!r}")
    try:
        return kind(raw)
    except ValueError:
        raise ModuleError(f"parameter {key} must be {_a(kind)}, got {raw!r}") from None

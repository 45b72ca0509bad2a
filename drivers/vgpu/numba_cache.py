"""The numba cache of the compiled simulation, stamped as one unit (`drivers/vgpu`).

numba caches each ``@njit(cache=True)`` function under a stamp of its own
source file only.  The compiled epoch loop (`sharing/epoch.py`) calls into
the engine and into every policy's compiled form, and numba compiles those
callees into it; after an edit to a policy file, the loop's cached code
would still hold the old policy.  So the functions of these files are
stamped with all of them: an edit to any one recompiles them all, and a
cache never outlives the code it was built from.  They are cached in a
folder named by the unit's file names (`UNIT_FOLDER`), so a cache of a
former layout of the unit is never read.

`register` adds the locators once; engine.py imports this first, before any
of the files' functions are defined.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from numba.core import caching

VGPU = Path(__file__).resolve().parent
#: The files whose compiled functions call one another, as patterns of
#: their paths under drivers/vgpu (an image matches its members by them).
UNIT_PATTERNS = (
    "engine.py",
    "sharing/compiled.py",
    "sharing/epoch.py",
    "sharing/dispatch.py",
    "sharing/python_policy.py",
    "policies/*.py",
)
UNIT = tuple(path for pattern in UNIT_PATTERNS for path in sorted(VGPU.glob(pattern)))
_UNIT_NAMES = frozenset(str(p) for p in UNIT)
#: The unit's cache folder, named by the unit's files: a cache pickles the
#: types of the functions it holds by module, so a cache written before a
#: file of the unit moved could not even be read, and is left alone.
UNIT_FOLDER = (
    "unit-"
    + hashlib.sha1("\n".join(str(p.relative_to(VGPU)) for p in UNIT).encode()).hexdigest()[:12]
)


def unit_stamp() -> tuple:
    """Each file's modification time and size, or None where one cannot be read."""
    stamp = []
    for path in UNIT:
        try:
            st = os.stat(path)
        except OSError:  # not a plain file (an image's zip): no unit stamp
            return ()
        stamp.append((path.name, st.st_mtime, st.st_size))
    return tuple(stamp)


def _unit_locator(base: type) -> type:
    """`base`, with the unit's stamp for the unit's files."""

    class UnitLocator(base):  # type: ignore[misc, valid-type]
        @classmethod
        def from_function(cls, py_func, py_file):
            if os.path.abspath(py_file) not in _UNIT_NAMES or not unit_stamp():
                return None
            return super().from_function(py_func, py_file)

        def get_cache_path(self):
            return os.path.join(super().get_cache_path(), UNIT_FOLDER)

        def get_source_stamp(self):
            return (super().get_source_stamp(), unit_stamp())

    UnitLocator.__name__ = UnitLocator.__qualname__ = f"Unit{base.__name__}"
    return UnitLocator


def register() -> None:
    """Put the unit's locators first (once)."""
    classes: list[type] = caching.CacheImpl._locator_classes  # type: ignore[assignment]
    if any(getattr(c, "_malvos_unit", False) for c in classes):
        return
    unit = []
    for base in classes:
        locator = _unit_locator(base)
        locator._malvos_unit = True  # type: ignore[attr-defined]
        unit.append(locator)
    classes[:0] = unit


register()

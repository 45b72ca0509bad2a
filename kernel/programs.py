"""The program table: the names the kernel can spawn.

The kernel never imports drivers or userland.  Servers and programs are
registered under the ``malvos.programs`` entry-point group (see
pyproject.toml) and looked up here by name, the way a boot loader finds
programs in an initramfs.  Tests and images can `register` more.

A program is a generator function taking one argument, its `Proc`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

Program = Callable[[Any], Any]

GROUP = "malvos.programs"


class TableEntry:
    """One program named as an entry point names it, ``module:function``,
    loaded on first use (what an image registers in place of installed
    metadata, which an image does not have)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def load(self) -> Program:
        module, _, attr = self.target.partition(":")
        return getattr(import_module(module), attr)


class ProgramTable:
    def __init__(self) -> None:
        self._programs: dict[str, Program] = {}
        self._entry_points: dict[str, Any] | None = None

    def _eps(self) -> dict[str, Any]:
        if self._entry_points is None:
            self._entry_points = {ep.name: ep for ep in entry_points(group=GROUP)}
        return self._entry_points

    def register(self, name: str, program: Program) -> None:
        if not callable(program):
            raise TypeError(f"program {name!r} must be a generator function")
        self._programs[name] = program

    def lookup(self, name: str) -> Program:
        prog = self._programs.get(name)
        if prog is not None:
            return prog
        ep = self._eps().get(name)
        if ep is None:
            raise KeyError(name)
        prog = ep.load()
        self._programs[name] = prog
        return prog

    def use_only(self, entries: dict[str, str]) -> None:
        """Find programs in `entries` (name -> ``module:function``) and nowhere
        else: the installed entry points are no longer consulted."""
        self._entry_points = {name: TableEntry(target) for name, target in entries.items()}

    def names(self) -> list[str]:
        return sorted(set(self._programs) | set(self._eps()))


DEFAULT_PROGRAMS = ProgramTable()

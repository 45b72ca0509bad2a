"""Forging snapshots as an attacker with the host's key would: read a file's
tree of plain values without checking it, change it, and seal it again."""

from __future__ import annotations

from typing import Any

from kernel.hypervisor import seal


def tree_of(path) -> Any:
    """The decoded, unchecked contents of the snapshot at `path` (this host's key)."""
    return seal.read(str(path), seal.host_key())


def reseal(path, tree: Any, key: bytes | None = None) -> None:
    """Seal `tree` into `path`, as it is, with `key` (by default this host's)."""
    seal.write(str(path), tree, key if key is not None else seal.host_key())


def forge(path, change) -> None:
    """Change the snapshot at `path` in place (`change(tree)`), validly sealed."""
    tree = tree_of(path)
    change(tree)
    reseal(path, tree)

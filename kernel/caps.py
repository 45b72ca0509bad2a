"""Capabilities: the only way a task can name a kernel object.

Each task has a `CSpace`, a table of slots.  A slot holds a `Capability`: an
object reference, rights (read, write, grant) and a badge.  Caps form a
derivation tree (seL4's CDT): `mint` and `copy` make children, and `revoke`
deletes a cap's whole subtree, in every task's cspace at once.

Every trap that takes a slot goes through `CSpace.lookup`, which checks the
slot and the right on every use.  A bad slot raises `CapabilityError` into the
caller; kernel state is untouched.
"""

from __future__ import annotations

from typing import Any

from kernel.errors import CapabilityError


class Rights:
    """Rights are bits of a plain int: checked on every trap, so kept cheap
    (an `enum.Flag` test costs more than the rest of a lookup)."""

    NONE = 0
    READ = 1  # receive on an endpoint, wait on a notification
    WRITE = 2  # send on an endpoint, signal a notification
    GRANT = 4  # transfer caps through the endpoint
    ALL = 7

    @staticmethod
    def describe(rights: int) -> str:
        return "".join(c if rights & bit else "-" for c, bit in (("r", 1), ("w", 2), ("g", 4)))

    @staticmethod
    def valid(rights: Any) -> bool:
        return isinstance(rights, int) and not isinstance(rights, bool) and 0 <= rights <= 7


class Capability:
    __slots__ = ("obj", "rights", "badge", "parent", "children", "cspace", "slot")

    def __init__(self, obj: Any, rights: int, badge: int = 0, parent: Capability | None = None):
        self.obj = obj
        self.rights = rights
        self.badge = badge
        self.parent = parent
        self.children: list[Capability] = []
        self.cspace: CSpace | None = None
        self.slot = -1
        if parent is not None:
            parent.children.append(self)

    def derive(self, rights: int | None = None, badge: int | None = None) -> Capability:
        """A child cap with at most this cap's rights (rights only shrink)."""
        new_rights = self.rights if rights is None else (self.rights & rights)
        return Capability(self.obj, new_rights, self.badge if badge is None else badge, parent=self)

    def __repr__(self) -> str:
        return f"Capability({type(self.obj).__name__}, {Rights.describe(self.rights)}, badge={self.badge})"


class CSpace:
    """One task's table of capability slots."""

    def __init__(self, owner: str = "") -> None:
        self.owner = owner
        self.slots: dict[int, Capability] = {}
        self._next = 1

    def insert(self, cap: Capability) -> int:
        slot = self._next
        self._next += 1
        cap.cspace = self
        cap.slot = slot
        self.slots[slot] = cap
        added = getattr(cap.obj, "cap_added", None)
        if added is not None:
            added(cap)
        return slot

    def lookup(self, slot: Any, need: int = 0, kind: type | None = None) -> Capability:
        try:
            cap = self.slots[slot]
        except (KeyError, TypeError):
            raise CapabilityError(f"no capability in slot {slot!r}") from None
        if cap.rights & need != need:
            raise CapabilityError(
                f"slot {slot} lacks rights {Rights.describe(need)} (has {Rights.describe(cap.rights)})"
            )
        if kind is not None and type(cap.obj) is not kind and not isinstance(cap.obj, kind):
            raise CapabilityError(
                f"slot {slot} names a {type(cap.obj).__name__}, not a {kind.__name__}"
            )
        return cap

    def delete(self, slot: int) -> list[Any]:
        return unlink(self.lookup(slot))

    def clear(self) -> list[Any]:
        """Delete every cap (task exit).  Children of these caps survive,
        re-parented to nothing: revoking happens only on request."""
        stranded: list[Any] = []
        for cap in list(self.slots.values()):
            stranded.extend(unlink(cap))
        return stranded


def _drop(cap: Capability) -> list[Any]:
    """Take `cap` out of its cspace; returns tasks stranded by its loss."""
    if cap.cspace is None:
        return []
    cap.cspace.slots.pop(cap.slot, None)
    cap.cspace = None
    dropped = getattr(cap.obj, "cap_dropped", None)
    return dropped(cap) if dropped is not None else []


def unlink(cap: Capability) -> list[Any]:
    """Remove one cap from its cspace and from the derivation tree.
    Returns the tasks stranded by its loss (see `ipc.KernelObject`)."""
    stranded = _drop(cap)
    if cap.parent is not None:
        try:
            cap.parent.children.remove(cap)
        except ValueError:
            pass
        cap.parent = None
    for child in cap.children:
        child.parent = None
    cap.children = []
    return stranded


def descendants(cap: Capability) -> int:
    """How many caps derive from `cap`, directly or not (its subtree, less itself)."""
    count = 0
    stack = list(cap.children)
    while stack:
        c = stack.pop()
        count += 1
        stack.extend(c.children)
    return count


def revoke(cap: Capability) -> list[Any]:
    """Delete every descendant of `cap`, wherever it lives.
    Returns the tasks stranded by their loss."""
    removed: list[Capability] = []
    stack = list(cap.children)
    while stack:
        c = stack.pop()
        stack.extend(c.children)
        removed.append(c)
    stranded: list[Any] = []
    for c in removed:
        stranded.extend(_drop(c))
        c.parent = None
        c.children = []
    cap.children = []
    return stranded

"""Capabilities: rights, badges, derivation and revocation."""

from __future__ import annotations

from kernel import Kernel, Message, Rights
from kernel.errors import CapabilityError, InvalidArgument
from kernel.traps import (
    Compute,
    Copy,
    Derived,
    Mint,
    NewEndpoint,
    Revoke,
    Send,
    Sleep,
    Spawn,
    Wait,
)


def test_a_task_cannot_use_an_empty_slot_and_state_is_unchanged(bare_kernel: Kernel):
    errors = []

    def prog(proc):
        for bad in (99, -1, "x", None):
            try:
                yield Send(bad, Message("x"))
            except CapabilityError:
                errors.append(bad)

    bare_kernel.spawn(prog)
    bare_kernel.run()
    assert errors == [99, -1, "x", None]


def test_rights_only_shrink_and_are_checked_on_every_use(bare_kernel: Kernel):
    errors = []

    def prog(proc):
        ep = yield NewEndpoint()
        ro = yield Copy(ep, Rights.READ)
        widened = yield Copy(ro, Rights.ALL)  # cannot gain rights
        for slot in (ro, widened):
            try:
                yield Send(slot, Message("x"))
            except CapabilityError:
                errors.append(slot)
        try:
            yield Wait(ep)  # an endpoint is not a notification
        except CapabilityError:
            errors.append("kind")

    bare_kernel.spawn(prog)
    bare_kernel.run()
    assert len(errors) == 3 and errors[-1] == "kind"


def test_revoke_removes_the_whole_derivation_tree_everywhere(bare_kernel: Kernel):
    seen = []

    def parent(proc):
        ep = yield NewEndpoint()
        child_cap = yield Mint(ep, Rights.WRITE, badge=7)
        grandchild = yield Copy(child_cap)
        pid = yield Spawn(holder, caps={"ep": grandchild})
        yield Compute(5)
        yield Revoke(ep)
        for slot in (child_cap, grandchild):
            try:
                yield Send(slot, Message("x"))
            except CapabilityError:
                seen.append("revoked")
        del pid

    def holder(proc):
        yield Compute(50)
        try:
            yield Send(proc.caps["ep"], Message("x"))
        except CapabilityError:
            seen.append("child revoked too")

    bare_kernel.spawn(parent)
    bare_kernel.run()
    assert seen == ["revoked", "revoked", "child revoked too"]


def test_derived_counts_the_caps_still_held_below_a_cap(bare_kernel: Kernel):
    counts = []

    def server(proc):
        ep = yield NewEndpoint()
        minted = yield Mint(ep, Rights.WRITE, badge=3)
        counts.append((yield Derived(minted)))
        copy = yield Copy(minted)
        yield Spawn(holder, caps={"ep": copy})  # the child gets a cap derived from the copy
        counts.append((yield Derived(minted)))
        yield Sleep(1_000)  # the holder exits and its cap goes with it
        counts.append((yield Derived(minted)))

    def holder(proc):
        yield Compute(10)

    bare_kernel.spawn(server)
    bare_kernel.run()
    assert counts == [0, 2, 1]


def test_badges_are_64_bit_words_and_cannot_be_rebadged(bare_kernel: Kernel):
    errors = []

    def prog(proc):
        ep = yield NewEndpoint()
        badged = yield Mint(ep, Rights.WRITE, badge=5)
        for cap, badge in ((ep, -1), (ep, 1 << 64), (badged, 6)):
            try:
                yield Mint(cap, Rights.WRITE, badge=badge)
            except InvalidArgument:
                errors.append(badge)

    bare_kernel.spawn(prog)
    bare_kernel.run()
    assert errors == [-1, 1 << 64, 6]

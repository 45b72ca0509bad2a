"""Programs that talk to the hypervisor from inside a guest: `vminfo` and
the balloon driver `balloon`.  On a kernel that is not a guest, the
`Hypercall` trap fails with ENOSYS, and so do they."""

from __future__ import annotations

from kernel.hypervisor.hypercall import Hc, Status
from kernel.traps import Hypercall, MemBalloon
from userland.lib import UsageError, int_arg, println, program


def hypercall(number: Hc, *args):
    """One hypercall; its value, or UsageError with the host's message."""
    status, value = yield Hypercall(number, args)
    if status != Status.OK:
        raise UsageError(f"{Status(status).name}: {value}")
    return value


@program
def vminfo(proc):
    """vminfo: what the hypervisor says of this guest (name, memory, balloon)."""
    info = yield from hypercall(Hc.VM_INFO)
    yield from println(
        proc,
        f"vm {info['name']}: {info['pages']} pages, {info['given_pages']} given back, "
        f"queues {info['queues']}",
    )


@program
def balloon(proc):
    """balloon PAGES: give PAGES frames back to the host (negative: take them again)."""
    pages = int_arg(proc.argv, 0, "pages", minimum=-(1 << 20))
    if pages == 0:
        raise UsageError("usage: balloon PAGES (negative to take pages back)")
    if pages > 0:  # free the frames first, then tell the host they are its
        yield MemBalloon(pages)
        try:
            held = yield from hypercall(Hc.BALLOON, pages)
        except UsageError:
            yield MemBalloon(-pages)
            raise
    else:  # ask the host first: only then are the frames ours again
        held = yield from hypercall(Hc.BALLOON, pages)
        yield MemBalloon(pages)
    yield from println(proc, f"balloon: the guest holds {held} pages")

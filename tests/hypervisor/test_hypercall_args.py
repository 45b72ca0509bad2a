"""The hypercall boundary normalises: a guest's arguments are converted to
their declared types and ranges before they are used or journaled, anything
else is refused with EINVAL and journaled as that refusal, and so a guest
can put nothing into its journal that its host's next snapshot cannot store."""

from __future__ import annotations

import msgpack
import pytest

from kernel import Kernel
from kernel.config import KernelConfig
from kernel.hypervisor import Hypervisor, VmState
from kernel.hypervisor.hypercall import MAX_MESSAGE_CHARS, NOT_A_NUMBER, Hc, Status, read_call
from kernel.programs import ProgramTable
from kernel.traps import Hypercall

CALLED: list[str] = []  # what a hostile value's methods would have done, had they run


class SneakyInt(int):
    """An int whose own methods lie, and say so when they run."""

    def __index__(self):
        CALLED.append("__index__")
        return 1 << 70

    def __int__(self):
        CALLED.append("__int__")
        return 1 << 70

    def __eq__(self, other):
        CALLED.append("__eq__")
        return True

    __hash__ = int.__hash__


class SneakyStr(str):
    def __str__(self):
        CALLED.append("__str__")
        return "../../etc/passwd"

    def __len__(self):
        CALLED.append("__len__")
        return 3

    def __eq__(self, other):
        CALLED.append("__eq__")
        return True

    __hash__ = str.__hash__


class Loud(type):
    """A metaclass whose classes lie about their name."""

    @property
    def __name__(cls):
        CALLED.append("__name__")
        return "x" * 1_000_000


class Hostile(metaclass=Loud):
    def __index__(self):
        CALLED.append("__index__")
        return 3

    def __int__(self):
        CALLED.append("__int__")
        return 3

    def __eq__(self, other):
        CALLED.append("__eq__")
        return True

    def __len__(self):
        CALLED.append("__len__")
        return 3

    __hash__ = object.__hash__


@pytest.fixture(autouse=True)
def nothing_called():
    CALLED.clear()
    yield
    assert CALLED == [], f"a guest's value ran code in the host: {CALLED}"


def encodable(call) -> bool:
    msgpack.packb([call.number, list(call.args), list(call.refusal or ())], use_bin_type=True)
    return True


@pytest.mark.parametrize(
    ("number", "args", "plain"),
    [
        (Hc.BALLOON, (SneakyInt(3),), (3,)),  # int's own value, not __index__'s
        (SneakyInt(Hc.BALLOON), (-2,), (-2,)),
        (Hc.POLICY_CHOOSE, (SneakyStr("lru"),), ("lru",)),
    ],
)
def test_int_and_str_subclasses_become_plain_ints_and_strs(number, args, plain):
    call = read_call(number, args)
    assert call.refusal is None and call.args == plain
    assert [type(a) for a in call.args] == [type(p) for p in plain] and type(call.number) is int
    assert encodable(call)


@pytest.mark.parametrize(
    ("number", "args", "words"),
    [
        (Hc.BALLOON, (2**64,), "pages value 18446744073709551616 is outside"),
        (Hc.BALLOON, (-(2**200),), "pages value of 201 bits is outside"),
        (Hc.BALLOON, (True,), "pages must be an int, got bool"),
        (Hc.BALLOON, (1.0,), "pages must be an int, got float"),
        (Hc.BALLOON, (float("nan"),), "got float"),
        (Hc.BALLOON, ([[[[1]]]],), "got list"),
        (Hc.BALLOON, ({"pages": 1},), "got dict"),
        (Hc.BALLOON, (Hostile(),), "pages must be an int, got object"),
        (Hc.BALLOON, (Hostile,), "got object"),
        (Hc.POLICY_CHOOSE, ("x" * 10_000_000,), "name length 10000000 is outside 1..64"),
        (Hc.POLICY_CHOOSE, (b"lru",), "got bytes"),
        (Hc.POLICY_CHOOSE, (Hostile(),), "got object"),
        (Hostile(), (1,), "a hypercall number is an int, got object"),
        (2**200, (), "no hypercall of 201 bits"),
        (Hc.KICK, [0], "a hypercall's arguments are a tuple"),
    ],
)
def test_anything_else_is_einval_and_is_journaled_as_the_refusal(number, args, words):
    call = read_call(number, args)
    assert call.args == () and call.refusal is not None
    assert call.refusal.status in (Status.EINVAL, Status.ENOSYS)
    assert words in call.refusal.value and len(call.refusal.value) <= MAX_MESSAGE_CHARS
    assert type(call.number) is int and -(1 << 63) <= call.number < 1 << 63
    assert encodable(call)


def test_a_number_past_64_bits_is_journaled_as_not_a_number():
    assert read_call(1 << 64, ()).number == NOT_A_NUMBER
    assert read_call(-(1 << 63), ()).number == -(1 << 63)


# -- a live guest, then its host's snapshot ----------------------------------------------------


def guest_host(calls):
    """A host whose program table has `hc`, a guest program making `calls`
    (the same objects on a replay: the program is the host's)."""
    answers: list = []

    def hc(proc):
        for number, args in calls:
            answers.append((yield Hypercall(number, args)))

    table = ProgramTable()
    table.register("hc", hc)
    host = Kernel(seed=0, name="host", gpu=None, programs=table).boot()
    host.hv = Hypervisor(host)
    return host, answers


def test_a_guest_hypercall_with_a_65_bit_int_does_not_break_its_hosts_snapshot(tmp_path):
    host, answers = guest_host([(Hc.BALLOON, (2**64,)), (Hc.BALLOON, (SneakyInt(2),))])
    try:
        host.hv.create("g", KernelConfig(seed=5, gpu=None, frames=64)).start()
        host.shell("vm console g run hc")
        assert [status for status, _ in answers] == [Status.EINVAL, Status.OK]
        (refusal, given) = [e.data for e in host.hv.get("g").journal.entries if e.kind == "hc"]
        assert refusal[:2] == (Hc.BALLOON, ()) and given[:2] == (Hc.BALLOON, (2,))
        out = host.shell(f"vm snapshot g {tmp_path / 'g.snap'}")
        assert out.startswith("vm: g: saved to"), out
        assert host.shell("vm stop g") == "vm: g: stopped\n"
        assert "g: restored from" in host.shell(f"vm restore {tmp_path / 'g.snap'}")
        assert host.hv.get("g").state is VmState.RUNNING
        assert host.shell("vm console g run echo back") == "back\n"
    finally:
        host.hv.shutdown()
        host.machine.shutdown()

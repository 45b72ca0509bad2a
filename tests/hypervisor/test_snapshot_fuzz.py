"""Structure-aware fuzzing of restore: a real snapshot's tree, decoded, changed
where an attacker would change it (types, sizes, paths, out-of-range
integers, deep nesting, extra and missing keys, journal entries dropped,
doubled or moved), and sealed again with the right key.  Each restore either
continues exactly as the original does, or is refused with one line; no
other exception escapes, and the host's shell answers afterwards.  Then the
same from the other side: guests that pass random Python objects to their
hypercalls, then are snapshotted and restored."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from forge import reseal, tree_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel import Kernel
from kernel.config import KernelConfig
from kernel.hypervisor import Hypervisor, VmState
from kernel.hypervisor.snapshot import SnapshotError, state_hash
from kernel.programs import ProgramTable
from kernel.traps import Hypercall

GUEST = KernelConfig(seed=5, gpu=None, frames=64)
LATER_NS = 3_000_000  # how long a restored guest runs before it is compared
FUZZ = settings(
    max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


def fresh_host(programs: ProgramTable | None = None) -> Kernel:
    """A host that did not make the guest, and allows it lru as its maker did."""
    host = Kernel(seed=0, name="host", gpu=None, programs=programs).boot()
    host.hv = Hypervisor(host)
    host.mlaas.allow("lru")
    return host


def restore_on_a_fresh_host(path, at_ns: int) -> tuple[Any, ...]:
    """What the snapshot at `path` becomes on a fresh host: a one-line
    refusal, or the restored guest's output and state `LATER_NS` on."""
    host = fresh_host()
    try:
        host.machine.run(until=at_ns)
        try:
            vm = host.hv.restore(str(path))
        except SnapshotError as exc:
            message = str(exc)
            assert message and "\n" not in message and len(message) <= 300, message
            outcome: tuple[Any, ...] = ("refused", message)
        else:
            host.machine.run(until=host.machine.now_ns + LATER_NS)
            hashed = state_hash(vm.kernel, vm.window, vm._console)
            outcome = ("restored", vm.state, vm.console_output, hashed)
        assert host.shell("vm list").startswith("NAME ")
        assert host.shell("run echo alive") == "alive\n"
        return outcome
    finally:
        host.hv.shutdown()
        host.machine.shutdown()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A snapshot of a guest that chose lru, swaps under it and runs IPC,
    taken once; its tree, and what restoring it on a fresh host gives."""
    host = fresh_host()
    try:
        vm = host.hv.create("g", GUEST, allowed_modules=("lru",)).start()
        vm.shell("insmod lru")
        vm.shell("run memhog 80 &")
        vm.shell("run pingpong 300 &")
        host.machine.run(until=host.machine.now_ns + 4_000_000)
        path = tmp_path_factory.mktemp("fuzz") / "g.snap"
        info = vm.snapshot(str(path))
    finally:
        host.hv.shutdown()
        host.machine.shutdown()
    outcome = restore_on_a_fresh_host(path, info.at_ns)
    assert outcome[0] == "restored" and outcome[1] is VmState.RUNNING
    return path, tree_of(path), info.at_ns, outcome


def places(tree: Any, at: tuple = ()) -> list[tuple]:
    """Every place in a tree, as the keys and indices that reach it."""
    found = [at]
    if type(tree) is dict:
        for key, value in tree.items():
            found += places(value, (*at, key))
    elif type(tree) is list:
        for i, value in enumerate(tree):
            found += places(value, (*at, i))
    return found


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


#: Values an attacker would put anywhere: each plain type msgpack stores,
#: its edges, paths, and deep or wide containers.
values = st.one_of(
    st.integers(-(1 << 63), (1 << 64) - 1),
    st.sampled_from([0, -1, 1, 63, 64, 99, 1 << 20, 1 << 31, 1 << 45, (1 << 63) - 1, -(1 << 63)]),
    st.sampled_from(
        ["", "lru", "/dev/zero", "../../etc/passwd", "mlaas_modules/lru.py", "x" * 5000]
    ),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True),
    st.integers(1, 300).map(nested),
    st.recursive(
        st.integers(-2, 2) | st.none() | st.text(max_size=3),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
        ),
        max_leaves=8,
    ),
)


def storable(n: int) -> bool:
    """An int msgpack can store."""
    return -(1 << 63) <= n < 1 << 64


def _parent(tree: Any, place: tuple) -> tuple[Any, Any]:
    node = tree
    for step in place[:-1]:
        node = node[step]
    return node, place[-1]


def _where(place: tuple, within: tuple) -> bool:
    """Is `place` one to change: under `within`, and (unless `within` is the
    journal) not inside it, so that the journal's thousand places do not
    crowd out the rest (its own test changes those)."""
    in_journal = len(place) > 1 and place[0] == "journal"
    return bool(place) and place[: len(within)] == within and (within != () or not in_journal)


@st.composite
def mutants(draw, tree: Any, within: tuple = ()) -> Any:
    """`tree` with one to three places changed (only under `within`)."""
    tree = copy.deepcopy(tree)
    for _ in range(draw(st.integers(1, 3))):
        place = draw(st.sampled_from([p for p in places(tree) if _where(p, within)]))
        node, key = _parent(tree, place)
        op = draw(st.sampled_from(["replace", "tweak", "delete", "extra", "wrap"]))
        if op == "replace":
            node[key] = draw(values)
        elif op == "tweak" and type(node[key]) is int:
            n = node[key]
            node[key] = draw(
                st.sampled_from([m for m in (n + 1, n - 1, -n, 0, 2 * n) if storable(m)])
            )
        elif op == "delete":
            del node[key]
        elif op == "extra" and type(node[key]) is dict:
            node[key][draw(st.text(max_size=8) | st.integers(-(1 << 63), 1 << 63))] = draw(values)
        elif op == "extra" and type(node[key]) is list:
            node[key].append(draw(values))
        else:
            node[key] = [node[key]]
    return tree


@st.composite
def journal_mutants(draw, tree: Any) -> Any:
    """`tree` with its journal's entries dropped, doubled, swapped or retyped."""
    tree = copy.deepcopy(tree)
    journal = tree["journal"]
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(journal) - 1))
        op = draw(st.sampled_from(["drop", "double", "swap", "retype", "last"]))
        if op == "drop":
            del journal[i]
        elif op == "double":
            journal.insert(i, copy.deepcopy(journal[i]))
        elif op == "swap" and i + 1 < len(journal):
            journal[i], journal[i + 1] = journal[i + 1], journal[i]
        elif op == "retype":
            journal[i][4] = draw(st.sampled_from(
                ["grant", "line", "keys", "eof", "intr", "procdump", "irq", "dma", "hc", "boot",
                 "echo", "spawn"]
            ))  # fmt: skip
        else:
            journal.append(copy.deepcopy(journal[i]))
        if not journal:
            break
    return tree


def check_mutant(base, tmp_path, mutant) -> None:
    path, tree, at_ns, original = base
    changed = tmp_path / "changed.snap"
    reseal(changed, mutant)
    outcome = restore_on_a_fresh_host(changed, at_ns)
    assert outcome[0] == "refused" or outcome == original, outcome[:2]


@FUZZ
@given(data=st.data())
def test_a_changed_image_is_refused_in_one_line_or_restores_exactly(base, tmp_path, data):
    check_mutant(base, tmp_path, data.draw(mutants(base[1])))


@FUZZ
@given(data=st.data())
def test_a_changed_journal_is_refused_in_one_line_or_restores_exactly(base, tmp_path, data):
    tree = base[1]
    mutant = data.draw(st.one_of(journal_mutants(tree), mutants(tree, within=("journal",))))
    check_mutant(base, tmp_path, mutant)


# -- guests passing random objects to their hypercalls -------------------------------------------

CALLED: list[str] = []


class Hostile:
    """An object whose every method says when it runs in the host."""

    def __index__(self):
        CALLED.append("__index__")
        return 1

    def __eq__(self, other):
        CALLED.append("__eq__")
        return True

    def __len__(self):
        CALLED.append("__len__")
        return 1

    __hash__ = object.__hash__


class IntSub(int):
    pass


class StrSub(str):
    pass


objects = st.recursive(
    st.one_of(
        st.integers(-(1 << 70), 1 << 70), st.integers(-40, 70_000), st.booleans(),
        st.floats(allow_nan=True), st.text(max_size=80), st.binary(max_size=8), st.none(),
        st.integers(-(1 << 70), 1 << 70).map(IntSub), st.sampled_from(["lru", "mlfq"]).map(StrSub),
        st.builds(Hostile),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.lists(inner, max_size=3).map(tuple)
    | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=6,
)  # fmt: skip
calls = st.lists(
    st.tuples(st.one_of(st.integers(-1, 7), objects), st.lists(objects, max_size=3).map(tuple)),
    min_size=1,
    max_size=6,
)


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(calls=calls)
def test_random_hypercall_arguments_never_break_a_snapshot_or_its_restore(tmp_path, calls):
    def hc(proc):
        for number, args in calls:
            yield Hypercall(number, args)

    table = ProgramTable()
    table.register("hc", hc)
    host = fresh_host(table)
    CALLED.clear()
    try:
        host.hv.create("g", GUEST, allowed_modules=("lru",)).start()
        host.shell("vm console g run hc")
        out = host.shell(f"vm snapshot g {tmp_path / 'g.snap'}")
        assert out.startswith("vm: g: saved to"), out
        assert host.shell("vm stop g") == "vm: g: stopped\n"
        assert "g: restored from" in host.shell(f"vm restore {tmp_path / 'g.snap'}")
        assert host.shell("vm console g run echo back") == "back\n"
        assert "running" in host.shell("vm list")
        assert CALLED == []
    finally:
        host.hv.shutdown()
        host.machine.shutdown()

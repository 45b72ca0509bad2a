"""Forged snapshots, as an attacker who can write the file (and, here, even
seal it with the host's key) would make them.  Each is refused in one line,
or restores the guest the host would run, and the host's shell answers
afterwards: no module code the host would not load runs, no right widens,
nothing is opened as a path, nothing allocates past the VM's sizes."""

from __future__ import annotations

import os
import signal

import pytest
from forge import forge, tree_of

from kernel import Kernel
from kernel.config import KernelConfig
from kernel.hypervisor import Hypervisor, VmError, VmState
from kernel.hypervisor.hypercall import Hc
from kernel.hypervisor.port import WINDOW_BYTES
from kernel.hypervisor.snapshot import SnapshotError

GUEST = KernelConfig(seed=5, gpu=None, frames=64)


@pytest.fixture
def no_hang():
    """Fail, rather than hang, if a restore blocks (a FIFO) or reads without end."""

    def timeout(signum, frame):
        raise TimeoutError("the restore did not finish in 20 s")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def lru_snapshot(host, tmp_path):
    """A guest `g` that chose the lru module and swapped under it, saved and stopped."""
    vm = host.hv.create("g", GUEST, allowed_modules=("lru",)).start()
    assert "lru attached" in vm.shell("insmod lru")
    vm.shell("run memhog 80 &")
    host.machine.run(until=host.machine.now_ns + 2_000_000)
    path = tmp_path / "g.snap"
    vm.snapshot(str(path))
    host.hv.destroy("g")
    return path


def refused_by_the_shell(host, path, *words: str) -> str:
    """`vm restore` on the host's shell: one refusal line naming `words`, and
    the shell (and its hypervisor) still answer."""
    out = host.shell(f"vm restore {path}")
    assert out.startswith("vm: EVM: ") and out.count("\n") == 1, out
    for word in words:
        assert word in out, out
    assert "g" not in host.hv.vms
    assert host.shell("run echo alive") == "alive\n"
    assert host.shell("vm list").startswith("NAME ")
    return out


def _policy_entries(image):
    return [e for e in image["journal"] if e[4] == "hc" and e[5][0] == Hc.POLICY_CHOOSE]


def _evil_module(tmp_path):
    """A module file that leaves a marker when it is imported."""
    marker = tmp_path / "evil-ran"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('the host imported me')\n")
    return evil, marker


# -- module code -----------------------------------------------------------------------------


def test_a_journaled_policy_answer_naming_an_attackers_file_is_never_imported(
    host, lru_snapshot, tmp_path
):
    evil, marker = _evil_module(tmp_path)

    def answer_with_evil(image):
        assert image["vm"]["isolated_modules"] is False  # in-process: the host would import it
        (entry,) = _policy_entries(image)
        entry[5][2][1] = str(evil)  # "the host answered: load /tmp/.../evil.py"

    forge(lru_snapshot, answer_with_evil)
    vm = host.hv.restore(str(lru_snapshot))
    assert not marker.exists()
    assert vm.kernel.mlaas.modules["lru"].path == os.path.abspath(host.mlaas.offer("lru", ("lru",)))
    assert "lru" in vm.shell("lsmod") and vm.shell("run echo back") == "back\n"


def test_a_policy_choice_of_a_module_the_host_does_not_allow_is_refused_unimported(
    host, lru_snapshot, tmp_path
):
    evil, marker = _evil_module(tmp_path)

    def choose_evil(image):
        (entry,) = _policy_entries(image)
        entry[5][1] = ["evil"]
        entry[5][2][1] = str(evil)
        image["modules"] = {"evil": image["modules"]["lru"]}

    forge(lru_snapshot, choose_evil)
    refused_by_the_shell(host, lru_snapshot, "the vm chose the module evil", "does not allow")
    assert not marker.exists()


@pytest.mark.parametrize("spec", ["../evil.py", "/tmp/evil.py", "evil.py"])
def test_a_policy_choice_by_path_is_refused(host, lru_snapshot, spec):
    def choose_a_path(image):
        (entry,) = _policy_entries(image)
        entry[5][1] = [spec]
        image["modules"] = {}

    forge(lru_snapshot, choose_a_path)
    refused_by_the_shell(host, lru_snapshot, "chose a module by other than its name")


def test_a_module_changed_since_the_snapshot_is_refused(host, lru_snapshot):
    forge(lru_snapshot, lambda image: image["modules"].__setitem__("lru", "0" * 64))
    refused_by_the_shell(host, lru_snapshot, "the module lru changed since")


# -- rights ----------------------------------------------------------------------------------


def test_an_edited_allowed_modules_is_refused(host, lru_snapshot):
    forge(lru_snapshot, lambda image: image["vm"]["allowed_modules"].append("mlfq"))
    refused_by_the_shell(host, lru_snapshot, "allows mlfq, which this host does not allow it")


def test_a_path_is_not_a_module_name(host, lru_snapshot, tmp_path):
    evil, marker = _evil_module(tmp_path)
    forge(lru_snapshot, lambda image: image["vm"]["allowed_modules"].append("/tmp/evil.py"))
    refused_by_the_shell(host, lru_snapshot, "vm.allowed_modules[1]", "is not of the form")
    for spec in (str(evil), "evil.py", "../evil"):
        with pytest.raises(VmError, match="allowed_modules must be module names"):
            host.hv.create("p", allowed_modules=(spec,))
    assert not marker.exists()


def test_a_guest_made_isolated_is_not_restored_in_process(host, tmp_path):
    vm = host.hv.create("g", GUEST, isolated_modules=True).start()
    path = tmp_path / "g.snap"
    vm.snapshot(str(path))
    host.hv.destroy("g")
    forge(path, lambda image: image["vm"].__setitem__("isolated_modules", False))
    refused_by_the_shell(host, path, "this host runs vm 'g''s modules isolated")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda im: im["config"].__setitem__("frames", 1 << 20), "not made with the settings"),
        (lambda im: im["vm"].__setitem__("weight", 65535), "not made with the settings"),
        (lambda im: im["config"].__setitem__("seed", 6), "not made with the settings"),
    ],
)
def test_settings_this_host_did_not_give_the_vm_are_refused(host, lru_snapshot, change, words):
    forge(lru_snapshot, change)
    refused_by_the_shell(host, lru_snapshot, words)


def test_another_host_restores_a_vm_it_did_not_make_only_within_its_own_limits(
    lru_snapshot, tmp_path
):
    other = Kernel(seed=0, name="other", gpu=None, frames=256).boot()
    try:
        hv = Hypervisor(other)
        other.machine.run(until=other.machine.now_ns + 50_000_000)
        with pytest.raises(
            SnapshotError, match="allows lru, which this host does not allow a guest"
        ):
            hv.restore(str(lru_snapshot))
        other.mlaas.allow("lru")
        forge(lru_snapshot, lambda image: image["config"].__setitem__("frames", 1024))
        with pytest.raises(SnapshotError, match="has 1024 frames; this host gives a vm it did not"):
            hv.restore(str(lru_snapshot))
        forge(lru_snapshot, lambda image: image["config"].__setitem__("frames", 64))
        vm = hv.restore(str(lru_snapshot))
        assert vm.state is VmState.RUNNING and vm.shell("run echo here") == "here\n"
    finally:
        other.machine.shutdown()


# -- crashes and hangs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("waiting", "words"),
    [
        ([[0, 99]], "domain.waiting[0][1]: 99 is outside 0..63"),
        ([[0, 5]], "the vm's place in the scheduler's queue is not its vCPUs'"),
        ([[1, 0], [0, 1]], "the vm's place in the scheduler's queue is not its vCPUs'"),
    ],
)
def test_a_forged_place_in_the_scheduler_queue_is_refused(host, lru_snapshot, waiting, words):
    forge(lru_snapshot, lambda image: image["domain"].__setitem__("waiting", waiting))
    refused_by_the_shell(host, lru_snapshot, words)


def _insert_dma(image, data) -> None:
    """A journaled host write, at the place of the last input from the host's events."""
    last = next(e for e in reversed(image["journal"]) if not e[3] and e[4] != "hc")
    at = image["journal"].index(last) + 1
    image["journal"].insert(at, [*last[:4], "dma", data, last[6]])


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ([8192, 1 << 45], "expected bytes, got an int"),  # bytes(1 << 45): 32 TiB
        ([WINDOW_BYTES - 4, b"12345678"], "writes past the vm's window"),
        ([0, b"x" * (WINDOW_BYTES + 1)], "bytes; at most 1048576"),
    ],
)
def test_a_journaled_host_write_larger_than_the_window_is_refused(host, lru_snapshot, data, words):
    forge(lru_snapshot, lambda image: _insert_dma(image, data))
    refused_by_the_shell(host, lru_snapshot, words)


def test_modules_naming_dev_zero_or_a_fifo_are_refused_without_reading_them(
    host, lru_snapshot, tmp_path, no_hang
):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo)):
        forge(lru_snapshot, lambda image, p=path: image.__setitem__("modules", {p: "0" * 64}))
        refused_by_the_shell(host, lru_snapshot, "a malformed snapshot: modules key")


def test_a_journaled_answer_naming_dev_zero_or_a_fifo_is_never_opened(
    host, lru_snapshot, tmp_path, no_hang
):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo)):
        forge(lru_snapshot, lambda image, p=path: _policy_entries(image)[0][5][2].__setitem__(1, p))
        vm = host.hv.restore(str(lru_snapshot))
        assert vm.shell("run echo back") == "back\n"
        host.hv.destroy("g")


def test_a_snapshot_that_is_a_fifo_or_a_device_is_refused_without_blocking(host, tmp_path, no_hang):
    fifo = tmp_path / "fifo.snap"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero"):
        out = host.shell(f"vm restore {path}")
        assert out == f"vm: EVM: {path} is not a regular file\n"
    assert host.shell("run echo alive") == "alive\n"


def test_a_forged_image_reaches_no_deeper_than_its_schema(host, lru_snapshot):
    deep: list = []
    for _ in range(200):
        deep = [deep]
    forge(lru_snapshot, lambda image: _policy_entries(image)[0][5][2].__setitem__(1, deep))
    refused_by_the_shell(host, lru_snapshot, "nested deeper than 4")


# -- the working directory -------------------------------------------------------------------


def test_a_snapshot_restores_from_any_working_directory(host, tmp_path, monkeypatch):
    vm = host.hv.create("g", GUEST, allowed_modules=("lru",)).start()
    vm.shell("insmod lru")
    path = tmp_path / "g.snap"
    vm.snapshot(str(path))
    log = "".join(vm.kernel.log.lines())
    assert "path=mlaas_modules/lru.py" in log  # named the same from any directory
    host.hv.destroy("g")
    monkeypatch.chdir(tmp_path)
    again = host.hv.restore(str(path))
    assert again.shell("run echo from tmp") == "from tmp\n"
    tree = tree_of(path)
    (entry,) = _policy_entries(tree)
    assert os.path.isabs(entry[5][2][1])


def test_another_host_restores_no_vm_that_boots_servers_of_its_own(lru_snapshot):
    other = Kernel(seed=0, name="other", gpu=None).boot()
    try:
        hv = Hypervisor(other)
        other.mlaas.allow("lru")
        other.machine.run(until=other.machine.now_ns + 50_000_000)
        forge(lru_snapshot, lambda image: image["config"]["plan"].__setitem__("init", "memhog"))
        with pytest.raises(SnapshotError, match="boots servers of its own"):
            hv.restore(str(lru_snapshot))
    finally:
        other.machine.shutdown()


@pytest.mark.parametrize(
    "change",
    [
        lambda tables: tables["handles"].__setitem__(99, [7, 5, 1 << 40]),  # of no context
        lambda tables: tables["contexts"].__setitem__(1, [None, 1 << 40, None, 0]),  # no buffers
        lambda tables: tables.__setitem__("vm", "b"),  # another vm's back end
        lambda tables: tables.update(contexts={3: [None, 0, None, 0]}, next_ctx=2),  # given again
    ],
)
def test_forged_gpu_back_end_tables_are_refused(host, tmp_path, change):
    vm = host.hv.create("g", GUEST, gpu_share=60).start()
    assert "kernels" in vm.shell("run gpu-burn 1 8")
    path = tmp_path / "g.snap"
    vm.snapshot(str(path))
    host.hv.destroy("g")
    forge(path, lambda image: change(image["queues"]["0"]["state"]))
    refused_by_the_shell(host, path, "the vm's GPU back end")


# -- host files --------------------------------------------------------------------------------


def test_a_guest_writes_no_host_file_live_or_replayed(host, tmp_path):
    """`trace save FILE` in a guest would write FILE on the host: a guest's
    program may be hostile, and a forged journal could name any path.  It is
    refused in the guest, so the replay of a forged line is refused too."""
    written, forged = tmp_path / "trace.json", tmp_path / "planted"
    vm = host.hv.create("g", GUEST).start()
    for line in ("trace start", "run echo traced", "trace stop"):
        vm.shell(line)
    assert "a guest has no host files" in vm.shell(f"trace save {written}")
    assert not written.exists()
    path = tmp_path / "g.snap"
    vm.snapshot(str(path))
    host.hv.destroy("g")
    vm = host.hv.restore(str(path))
    assert not written.exists() and vm.shell("run echo back") == "back\n"
    host.hv.destroy("g")

    def plant(image):
        (line,) = [e for e in image["journal"] if e[4] == "line" and "trace save" in e[5][0]]
        line[5][0] = f"trace save {forged}"

    forge(path, plant)
    refused_by_the_shell(host, path, "the replay diverged")  # the console shows another line
    assert not forged.exists()


def test_a_journal_longer_than_a_snapshot_may_hold_is_not_written(host, tmp_path, monkeypatch):
    from kernel.hypervisor import snapshot as snapshots

    vm = host.hv.create("g", GUEST).start()
    monkeypatch.setattr(snapshots, "MAX_JOURNAL_ENTRIES", 3)
    out = host.shell(f"vm snapshot g {tmp_path / 'g.snap'}")
    assert out.startswith("vm: EVM: vm 'g' cannot be snapshotted: its journal holds") and (
        "more than a snapshot may (3)" in out
    )
    assert not (tmp_path / "g.snap").exists() and vm.shell("run echo on") == "on\n"

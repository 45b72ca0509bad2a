"""Loading, unloading and listing modules: insmod, rmmod, reload, lsmod, modinfo."""

from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from workloads import broken, cpu_worker, memory_worker

from kernel import Kernel
from kernel.mlaas import ModuleError
from kernel.sched import DEFAULT_SLICE_NS

SHIPPED = [
    "clock",
    "lru",
    "leap",
    "learned_warmth",
    "applaunch",
    "rr",
    "mlfq",
    "learned_srpt",
    "srpt_oracle",
    "noop",
    "first_fit",
    "fixed_clock",
]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_module_loads_and_unloads_cleanly(kernel: Kernel, name):
    rec = kernel.mlaas.insmod(name)
    assert rec.state == "live" and rec.doc
    assert kernel.mlaas.attached[rec.kind] is rec
    kernel.mlaas.rmmod(name)
    assert name not in kernel.mlaas.modules
    assert kernel.mlaas.modinfo(name)["last_exit"].reason == "rmmod"
    assert kernel.mm.policy.__class__.__name__ == "ClockPolicy"
    assert kernel.sched.advisor is None


def test_shell_commands_load_list_describe_and_remove_a_module(malv_kernel: Kernel):
    out = malv_kernel.shell("insmod lru; lsmod; modinfo lru")
    assert "insmod: lru attached as the memory advisor" in out
    assert "lru                  memory  live" in out
    assert "description: lru: least-recently-used page replacement." in out
    assert "last exit:   none" in out
    out = malv_kernel.shell("run memhog 2500; lsmod; rmmod lru; lsmod; modinfo lru")
    assert "memhog: 2500 pages written and read back, 0 corrupt" in out
    assert "rmmod: lru removed" in out
    assert out.count("lru                  memory") == 1  # listed before rmmod only
    assert "last exit:   unload (rmmod)" in out


def test_insmod_takes_parameters_typed_by_their_defaults(kernel: Kernel):
    rec = kernel.mlaas.insmod("mlfq", {"levels": "4", "slice_ms": "1.5"})
    assert rec.params == {"levels": 4, "slice_ms": 1.5, "boost_ms": 500.0}
    assert kernel.mlaas.modinfo("mlfq")["params"]["levels"] == 4


@pytest.mark.parametrize("params, reason", [
    ({"levels": "many"}, "parameter levels must be an int"),
    ({"colour": "red"}, "mlfq has no parameter 'colour'"),
])  # fmt: skip
def test_bad_parameters_are_refused_and_nothing_changes(kernel: Kernel, params, reason):
    with pytest.raises(ModuleError, match=reason):
        kernel.mlaas.insmod("mlfq", params)
    assert kernel.sched.advisor is None and not kernel.mlaas.modules


def test_an_advisor_of_a_kind_already_attached_is_refused(kernel: Kernel):
    kernel.mlaas.insmod("rr")
    with pytest.raises(ModuleError, match="the sched advisor 'rr' is attached: rmmod it first"):
        kernel.mlaas.insmod("mlfq")
    assert kernel.sched.advisor.name == "rr"


def test_a_module_loads_from_any_path_and_from_a_package(kernel: Kernel, tmp_path):
    pkg = tmp_path / "pkgmod"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .policy import Fifo\n")
    (pkg / "policy.py").write_text(
        "from kernel.mlaas import SchedAdvisor\n"
        "class Fifo(SchedAdvisor):\n"
        "    name = 'pkgmod'\n"
        "    def select_next(self, candidates, cpu):\n"
        "        return candidates[0]\n"
    )
    rec = kernel.mlaas.insmod(str(pkg))
    assert rec.name == "pkgmod" and rec.kind == "sched"
    results: list = []
    kernel.spawn(cpu_worker(3, results))
    kernel.run()
    assert results == ["done"] and rec.calls > 0


@pytest.mark.parametrize("source, reason", [
    ("x = 1\n", "defines no advisor class"),
    ("from kernel.mlaas import SchedAdvisor\nclass A(SchedAdvisor):\n    name='a'\n"
     "class B(SchedAdvisor):\n    name='b'\n", r"2 advisor classes \(A, B\)"),
    ("from kernel.mlaas import Advisor\nclass A(Advisor):\n    name='a'\n", "not from Advisor itself"),
    ("from kernel.mlaas import SchedAdvisor\nclass A(SchedAdvisor):\n    pass\n", "has no name"),
    ("from kernel.mlaas import SchedAdvisor\nclass A(SchedAdvisor):\n    name='a'\n    api_version=99\n",
     "API version 99 is not supported"),
    ("from kernel.mlaas import SchedAdvisor\nclass A(SchedAdvisor):\n    name='a'\n    budget_us=0\n",
     "budget_us must be a number"),
    ("from kernel.mlaas import SchedAdvisor\nclass A(SchedAdvisor):\n    name='a'\n"
     "    def select_next(self, candidates):\n        return None\n",
     r"cannot be called as select_next\(self, candidates, cpu\)"),
    ("from kernel.mlaas import SchedAdvisor\nclass A(SchedAdvisor):\n    name='a'\n    select_next = 3\n",
     "select_next is not callable"),
    ("from kernel.mlaas import SchedAdvisor\nclass A(SchedAdvisor):\n    name='a'\n"
     "    def select_victim(self, candidates):\n        return None\n", "wrong base"),
    ("from kernel.mlaas import SchedAdvisor\nclass A(SchedAdvisor):\n    name='a'\n    params={'x': [1]}\n",
     "use bool, int, float or str"),
    ("raise RuntimeError('no')\n", "raised RuntimeError: no"),
    ("from kernel.mlaas import SchedAdvisor\nclass A(SchedAdvisor):\n    name='a'\n"
     "    def on_load(self):\n        raise ValueError('bad config')\n", "on_load raised ValueError: bad config"),
])  # fmt: skip
def test_validation_refuses_a_bad_module_with_its_reason_and_changes_nothing(
    kernel: Kernel, tmp_path, source, reason
):
    path = tmp_path / "mod.py"
    path.write_text(source)
    log_before = len(kernel.log.ring)
    with pytest.raises(ModuleError, match=reason):
        kernel.mlaas.insmod(str(path))
    assert not kernel.mlaas.modules and not kernel.mlaas.attached
    assert kernel.sched.advisor is None
    assert kernel.log.find("insmod refused") and len(kernel.log.ring) == log_before + 1


def test_the_wrong_base_and_syntax_error_modules_are_refused(kernel: Kernel):
    with pytest.raises(ModuleError, match="derives from object, not one of MemoryAdvisor"):
        kernel.mlaas.insmod(broken("wrong_base"))
    with pytest.raises(ModuleError, match="syntax error in syntax_error.py line 9"):
        kernel.mlaas.insmod(broken("syntax_error"))
    assert not kernel.mlaas.modules


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=40))
def test_insmod_of_any_name_either_loads_or_refuses_cleanly(name):
    k = Kernel(seed=0, cpus=1)
    try:
        try:
            rec = k.mlaas.insmod(name)
        except ModuleError as exc:
            assert str(exc).startswith("EMODULE: ") and len(str(exc)) > 10
            assert not k.mlaas.modules
        else:
            assert rec.state == "live"
    finally:
        k.shutdown()


def test_reload_picks_up_an_edit_and_hands_the_state_over(kernel: Kernel, tmp_path):
    path = tmp_path / "counter.py"
    source = (
        "from kernel.mlaas import SchedAdvisor\n"
        "class Counter(SchedAdvisor):\n"
        "    name = 'counter'\n"
        "    def on_load(self):\n"
        "        self.dispatches = getattr(self, 'dispatches', 0)\n"
        "    def select_next(self, candidates, cpu):\n"
        "        self.dispatches += 1\n"
        "        return None\n"
        "    def export_state(self):\n"
        "        return self.dispatches\n"
        "    def import_state(self, state):\n"
        "        self.dispatches = state\n"
        "    def time_slice(self, task):\n"
        "        return SLICE\n"
    )
    path.write_text("SLICE = 1_000_000\n" + source)
    results: list = []
    kernel.mlaas.insmod(str(path))
    kernel.spawn(cpu_worker(5, results))
    kernel.run()
    counted = kernel.mlaas.advisor("sched").dispatches
    assert counted > 0
    path.write_text("SLICE = 2_000_000\n" + source)
    rec = kernel.mlaas.reload("counter")
    assert rec.report.reason == "reload" and "replaced version" in rec.report.message
    assert rec.advisor.dispatches == counted  # handed over
    assert rec.advisor.time_slice(None) == 2_000_000  # the edit took effect


def test_a_reload_that_fails_leaves_the_old_version_in(kernel: Kernel, tmp_path):
    path = tmp_path / "keeper.py"
    shutil.copy(
        os.path.join(os.path.dirname(broken("x")), "..", "..", "..", "mlaas_modules", "rr.py"), path
    )
    rec = kernel.mlaas.insmod(str(path), override=True)
    path.write_text(
        path.read_text().replace("def time_slice(self, task):", "def time_slice(self, task)")
    )
    with pytest.raises(
        ModuleError, match="reload of rr failed, the old version stays in: syntax error"
    ):
        kernel.mlaas.reload("rr")
    assert kernel.mlaas.attached["sched"] is rec and rec.state == "live"
    assert rec.report.kind == "reload-failed" and "syntax error" in rec.report.message
    assert kernel.log.find("reload failed")
    results: list = []
    kernel.spawn(cpu_worker(3, results))
    kernel.run()
    assert results == ["done"]


def test_reload_from_the_shell_after_an_edit(malv_kernel: Kernel, tmp_path):
    path = tmp_path / "slice.py"
    path.write_text(
        open(os.path.join(os.path.dirname(__file__), "..", "..", "mlaas_modules", "rr.py")).read()
    )
    out = malv_kernel.shell(f"insmod -f {path} slice_ms=3; reload rr; modinfo rr")
    assert "reload: rr: reloaded unchanged" in out and "slice_ms=3.0 (default 5.0)" in out
    path.write_text(path.read_text().replace('"slice_ms": 5.0', '"slice_ms": 4.0'))
    out = malv_kernel.shell("reload rr; lsmod")
    assert "reload: rr: replaced version" in out and "rr                   sched   live" in out


def test_each_kernel_has_its_own_registry():
    a, b = Kernel(seed=0, cpus=1), Kernel(seed=1, cpus=1)
    try:
        a.mlaas.insmod("lru")
        b.mlaas.insmod("mlfq")
        assert list(a.mlaas.modules) == ["lru"] and list(b.mlaas.modules) == ["mlfq"]
        assert a.sched.advisor is None and b.mm.policy.__class__.__name__ == "ClockPolicy"
    finally:
        a.shutdown()
        b.shutdown()


@pytest.fixture
def host_and_guest():
    """A host that allows lru and rr, and a guest kernel on its machine."""
    host = Kernel(seed=0, cpus=1, frames=64)
    guest = host.machine.kernel(seed=1, cpus=1, frames=64, name="guest1")
    host.mlaas.allow("lru", "rr")
    guest.mlaas.host_choice = host.mlaas.offer
    yield host, guest
    guest.shutdown()
    host.shutdown()


def test_a_guest_chooses_among_the_modules_its_host_allows(host_and_guest):
    host, guest = host_and_guest
    rec = guest.mlaas.choose("lru")
    assert guest.mlaas.attached["memory"] is rec
    assert "memory" not in host.mlaas.attached  # only the guest's share is affected
    with pytest.raises(ModuleError, match="the host does not allow 'mlfq' \\(allowed: lru, rr\\)"):
        guest.mlaas.choose("mlfq")
    with pytest.raises(ModuleError, match="does not allow"):
        guest.mlaas.insmod("/tmp/anything.py")
    guest.mlaas.choose("rr")
    assert guest.sched.advisor.name == "rr" and host.sched.advisor is None
    results: list = []
    guest.spawn(memory_worker(100, 1, results))
    host.spawn(memory_worker(100, 1, results))
    host.machine.run()
    assert results == [0, 0]
    assert guest.mlaas.modules["lru"].calls > 0 and not host.mlaas.modules


def test_a_host_can_require_its_guest_s_modules_to_run_isolated(host_and_guest):
    host, guest = host_and_guest
    guest.mlaas.require_isolation = True
    rec = guest.mlaas.choose("lru")
    assert rec.mode == "isolated" and rec.isolated.pid > 0
    results: list = []
    guest.spawn(memory_worker(100, 1, results))
    host.machine.run()
    assert results == [0] and rec.state == "live" and rec.calls > 0
    assert [row["mode"] for row in guest.mlaas.lsmod()] == ["isolated"]


def test_rmmod_of_an_unknown_module_says_so(kernel: Kernel):
    with pytest.raises(ModuleError, match="no module named 'ghost' is loaded"):
        kernel.mlaas.rmmod("ghost")


def test_default_slice_returns_after_the_sched_advisor_leaves(kernel: Kernel):
    kernel.mlaas.insmod("rr", {"slice_ms": "1"})
    kernel.mlaas.rmmod("rr")
    assert kernel.sched.time_slice(None) == DEFAULT_SLICE_NS


def test_an_ejected_module_can_be_loaded_again_but_a_live_one_cannot(kernel: Kernel):
    rec = kernel.mlaas.insmod(broken("garbage"))
    kernel.spawn(cpu_worker(1, []))
    kernel.run()
    assert rec.state == "ejected"
    again = kernel.mlaas.insmod(broken("garbage"))
    assert again.state == "live" and kernel.mlaas.modules["garbage"] is again
    with pytest.raises(ModuleError, match="module 'garbage' is already loaded \\(use reload\\)"):
        kernel.mlaas.insmod(broken("garbage"))


def test_shutdown_detaches_every_module_and_forgets_its_code():
    import sys

    k = Kernel(seed=0, cpus=1)
    rec = k.mlaas.insmod("lru")
    name = rec.module.__name__
    assert name in sys.modules
    k.shutdown()
    assert name not in sys.modules and rec.report.reason == "shutdown"
    assert k.mm.policy.__class__.__name__ == "ClockPolicy"

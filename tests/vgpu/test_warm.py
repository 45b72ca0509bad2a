"""The first compile is visible, and `malv compile` does it ahead of time (drivers/vgpu/warm.py)."""

from __future__ import annotations

from numba import njit, typeof

from drivers.vgpu import warm
from drivers.vgpu.policies import make_policy
from drivers.vgpu.sharing import epoch
from drivers.vgpu.sharing.sim import Simulation, Tenant
from drivers.vgpu.traces import Workload
from drivers.vgpu.work import KernelDesc
from image.cli import main


def test_a_compile_that_takes_a_while_is_announced_with_its_progress(monkeypatch, capsys):
    monkeypatch.setattr(warm, "QUIET_S", 0.0)
    monkeypatch.setattr(warm, "TICK_S", 0.001)

    @njit  # defined here: not compiled, and not in any cache
    def triple(x):
        return 3 * x

    entries = [("triple", triple, (typeof(1),))]
    assert warm.ensure_compiled("a test function", entries) > 0
    err = capsys.readouterr().err
    assert err.startswith("malvos: compiling a test function with numba, once (")
    assert "`malv compile`" in err and "malvos: compiled a test function in" in err
    assert triple(2) == 6 and len(triple.overloads) == 1  # compiled for the signature given
    # Compiled already: nothing to do, and nothing said.
    assert warm.ensure_compiled("a test function", entries) == 0.0
    assert capsys.readouterr().err == ""


def test_a_failed_compile_raises_where_it_was_asked_for(monkeypatch):
    monkeypatch.setattr(warm, "QUIET_S", 0.0)

    @njit
    def broken(x):
        return x.no_such_attribute

    try:
        warm.ensure_compiled("a broken function", [("broken", broken, (typeof(1),))])
    except Exception as exc:  # numba's typing error, on this thread
        assert "no_such_attribute" in str(exc)
    else:
        raise AssertionError("the compile error was lost")


def test_the_signatures_warmed_are_those_a_run_calls(capsys):
    """A run calls every entry point of the compiled loop with the signature
    `loop_entries` names: the notice covers the compile a run needs."""
    kernel = KernelDesc(name="k", grid_blocks=8, blocks_per_tpc=2, block_duration_ns=1000)
    tenant = Tenant("t", Workload("w", (kernel,), 8000, (0,), "test"), "closed")
    sim = Simulation([tenant], make_policy("lithos"), duration_ns=1_000_000)
    sim.run()
    loop = sim.loop
    assert loop is not None and not loop.interpreted
    for name, fn, sig in warm.loop_entries(epoch.DISPATCHERS, loop.dev, loop.pol):
        assert sig in fn.overloads, name


def test_malv_compile_warms_the_caches(capsys):
    assert main(["compile"]) == 0
    out = capsys.readouterr().out
    assert "the GPU sharing loop: ready" in out and "the functional kernels: ready" in out


def test_the_loop_is_known_cached_once_compiled():
    warm.compile_everything()
    assert warm.loop_cached()

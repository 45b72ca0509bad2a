"""The compiled simulation's numba cache is stamped as one unit (drivers/vgpu/numba_cache.py).

numba stamps a cached function with its own file only; the loop's compiled
entry points are compiled with the engine, the generated dispatch and every
policy's callbacks inside them, so their cache entries must go stale when
any of those files changes."""

from __future__ import annotations

from drivers.vgpu import numba_cache
from drivers.vgpu.engine import _run
from drivers.vgpu.sharing import epoch


def _locator(dispatcher):
    return dispatcher._cache._impl.locator


def test_the_epoch_loop_engine_and_policies_are_stamped_with_every_file_of_the_unit():
    names = {p.name for p in numba_cache.UNIT}
    assert {
        "engine.py", "epoch.py", "dispatch.py", "python_policy.py", "compiled.py",
        "lithos.py", "tgs.py",
    } <= names  # fmt: skip
    stamp = numba_cache.unit_stamp()
    assert [name for name, _, _ in stamp] == [p.name for p in numba_cache.UNIT]
    for fn in (*epoch.DISPATCHERS.values(), _run):
        locator = _locator(fn)
        assert type(locator).__name__.startswith("Unit")
        assert locator.get_source_stamp()[1] == stamp
        assert locator.get_cache_path().endswith(numba_cache.UNIT_FOLDER)


def test_functions_outside_the_unit_keep_numba_s_own_stamp():
    from drivers.vgpu import functional

    compiled = [v for v in vars(functional).values() if hasattr(v, "_cache")]
    assert compiled, "functional.py has no cached compiled function"
    assert not type(_locator(compiled[0])).__name__.startswith("Unit")

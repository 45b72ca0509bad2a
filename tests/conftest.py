"""Shared helpers for malvos tests.  The fixtures `malv_kernel` and
`malv_boot` come from the malvos pytest plugin (kernel/pytest_plugin.py).

The suite has two tiers.  `python3 -m pytest` runs the fast one: every
test not marked `slow`, with each hypothesis test drawing a quarter of its
examples (the `fast` profile).  `python3 -m pytest -m slow` runs the slow
one: wheel and fresh-venv installs, a cold numba compile, Ray, LoadGen
serve runs, whole experiments.  `--hypothesis-profile=full` gives every
hypothesis test its full count of examples; CI runs every test that way.

Before any test runs, the controller of the run (the only process of a
plain run, or the one that starts pytest-xdist's workers) compiles the vGPU's
numba code once if its cache is cold (`malv compile`), so that workers load
it from the cache instead of each compiling it at the same time.
"""

from __future__ import annotations

import math
import sys
import time

import pytest
from hypothesis import settings

from drivers.vgpu.backend import vgpu_backend
from drivers.vgpu.frontend import vgpu_front
from kernel import Kernel
from kernel.programs import DEFAULT_PROGRAMS

# The entry points in pyproject.toml are the real registration of a guest's
# GPU front end and its host back end; an install made before they were added
# lacks them, so they are registered here then.
for _name, _program in (("vgpu-front", vgpu_front), ("vgpu-backend", vgpu_backend)):
    if _name not in DEFAULT_PROGRAMS.names():
        DEFAULT_PROGRAMS.register(_name, _program)

# -- hypothesis profiles ----------------------------------------------------------------
#
# A test's own @settings(max_examples=N) is the count its property deserves
# (the `full` profile).  The fast tier scales it: each test draws N * FRACTION
# examples, never fewer than FLOOR (nor more than N), so every property is
# still tried on many inputs and can still fail on any test run.

#: Each profile's share of a test's own max_examples.
FRACTION = {"fast": 0.25, "full": 1.0}
#: The fewest examples the fast profile gives a test that asks for more.
FLOOR = 10

settings.register_profile("fast", deadline=None)
settings.register_profile("full", deadline=None)
settings.load_profile("fast")  # hypothesis' --hypothesis-profile loads another after this


def scaled_examples(asked: int, fraction: float) -> int:
    """The examples a test that asks for `asked` draws under a profile's `fraction`."""
    return min(asked, max(FLOOR, math.ceil(asked * fraction)))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under the fast profile, give each hypothesis test its share of examples."""
    fraction = FRACTION.get(settings.get_current_profile_name(), 1.0)
    if fraction >= 1.0:
        return
    seen: set[int] = set()
    for item in items:
        test = getattr(item, "obj", None)
        own = getattr(test, "_hypothesis_internal_use_settings", None)
        if own is None or not hasattr(test, "hypothesis") or id(test) in seen:
            continue
        seen.add(id(test))
        wanted = scaled_examples(own.max_examples, fraction)
        if wanted < own.max_examples:
            test._hypothesis_internal_use_settings = settings(own, max_examples=wanted)


# -- one numba compile, before the tests ------------------------------------------------


def _runs_tests(config: pytest.Config) -> bool:
    """Whether this pytest process runs or hands out tests (not a worker,
    not --collect-only or --fixtures, which run no test)."""
    option = config.option
    if hasattr(config, "workerinput"):  # an xdist worker: its controller compiled
        return False
    return not any(
        getattr(option, name, False) for name in ("collectonly", "showfixtures", "help", "version")
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile the vGPU's numba code once, here, if its cache is cold."""
    if not _runs_tests(session.config):
        return
    from drivers.vgpu import warm

    if warm.loop_cached():
        return
    start = time.monotonic()
    warm.compile_everything()
    print(
        f"\nmalvos tests: compiled the vGPU's numba code in {time.monotonic() - start:.0f} s "
        "(cached from now on)",
        file=sys.stderr,
    )


@pytest.fixture
def bare_kernel():
    """A kernel with no console, init or shell: tests spawn their own tasks."""
    k = Kernel(seed=0)
    yield k
    k.shutdown()

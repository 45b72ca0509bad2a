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

import faulthandler
import functools
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
#
# A fresh clone has no numba cache, and the sharing loop takes minutes of CPU
# to compile.  The process that runs or hands out the tests starts that
# compile (`malv compile`'s `compile_everything`) when the cache is cold.  In
# a plain run it compiles before the first test.  Under pytest-xdist it
# compiles in a child of its own while the workers start on the tests; a
# worker about to compile (warm.py's two ways in) first waits for that child,
# then loads what it cached, so no two processes compile it at once.

#: Set by the controller for its workers: the file its compile child writes when done.
COMPILED_FLAG = "MALV_TESTS_COMPILED_FLAG"

#: Where the controller keeps its compile child.
_compile_child = pytest.StashKey[subprocess.Popen]()

COMPILE_CHILD = """
import sys
try:
    from drivers.vgpu import warm
    warm.compile_everything()
finally:
    open(sys.argv[1], "w").close()
"""


def _runs_tests(config: pytest.Config) -> bool:
    """Whether this process runs or hands out tests: not a worker (its
    controller compiled), not --collect-only or --fixtures (no test runs)."""
    if hasattr(config, "workerinput"):
        return False
    options = ("collectonly", "showfixtures", "help", "version")
    return not any(getattr(config.option, name, False) for name in options)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile the vGPU's numba code once, here, if its cache is cold."""
    config = session.config
    if not _runs_tests(config):
        return
    from drivers.vgpu import warm

    if warm.loop_cached():
        return
    print(
        "\nmalvos tests: the numba cache is cold: compiling the vGPU's code once", file=sys.stderr
    )
    if not getattr(config.option, "numprocesses", None):  # a plain run
        warm.compile_everything()
        return
    flag = Path(tempfile.mkdtemp(prefix="malv-compile-")) / "done"
    child = subprocess.Popen([sys.executable, "-c", COMPILE_CHILD, str(flag)])
    config.stash[_compile_child] = child
    os.environ[COMPILED_FLAG] = str(flag)  # the workers, started after this, inherit it


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Wait for a compile child still running (a run with no GPU test)."""
    child = session.config.stash.get(_compile_child, None)
    if child is not None:
        child.wait()


def pytest_configure(config: pytest.Config) -> None:
    """In an xdist worker whose controller is compiling: wait for it before compiling."""
    flag = os.environ.get(COMPILED_FLAG)
    if not hasattr(config, "workerinput") or not flag:
        return
    from drivers.vgpu import warm

    def after_the_controller_s_compile(compile_now):
        @functools.wraps(compile_now)
        def waiting(*args, **kwargs):
            if not os.path.exists(flag):
                # the compile says how it goes; the test's own hang timer is not for this wait
                faulthandler.cancel_dump_traceback_later()
            while not os.path.exists(flag):
                time.sleep(0.5)
            return compile_now(*args, **kwargs)

        return waiting

    warm.ensure_compiled = after_the_controller_s_compile(warm.ensure_compiled)
    warm.compile_everything = after_the_controller_s_compile(warm.compile_everything)


@pytest.fixture
def bare_kernel():
    """A kernel with no console, init or shell: tests spawn their own tasks."""
    k = Kernel(seed=0)
    yield k
    k.shutdown()

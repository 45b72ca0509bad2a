"""A new policy is one new file plus one registration line (`drivers/vgpu/sharing/registry.py`).

The test adds a toy policy to a copy of the `drivers` package, exactly as a
researcher would add one to the tree, and runs it in the compiled loop.  It
is slow: the copy's files are new to numba and its dispatch holds one more
policy, so its subprocess compiles the whole loop cold, with every policy in
it (about 2-3 minutes of CPU).
"""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import drivers
from drivers.vgpu.policies import POLICY_NAMES

DRIVERS = Path(drivers.__file__).resolve().parent
#: The one registration line the toy policy needs.
TOY_LINE = "drivers.vgpu.policies.toy:Toy"
TOY_PRIORITY = 7

#: drivers/vgpu/policies/toy.py: every kernel launched whole, on TPC 0 only,
#: at the priority its parameter gives, with a named state of its own.
TOY_POLICY = '''"""A toy policy: every kernel whole, on TPC 0 only, at one priority (`drivers/vgpu/policies`)."""

from __future__ import annotations

import numpy as np

from drivers.vgpu.sharing.compiled import (
    Pol,
    compiled_fn,
    host_order,
    launch_whole,
    named_state,
    new_state,
    state_of,
    state_values,
)
from drivers.vgpu.sharing.policy import PRIO_NORMAL, SharingPolicy, converted

TPC_0 = 1


class Toy(SharingPolicy):
    name = "toy"
    summary = "Every kernel whole, on TPC 0 only, at one priority."
    PARAMETERS = {"level": converted("level", int)}

    def __init__(self, level: int = PRIO_NORMAL) -> None:
        self.level = level

    def compiled_setup(self, sim) -> Pol:
        self.sim = sim
        return new_state(STATE, 0, level=self.level)

    def compiled_report(self, pol: Pol) -> dict:
        return {"launches": int(state_values(pol, STATE)["launches"])}


STATE = named_state(level=np.int64, launches=np.int64)
state = state_of(STATE)


@compiled_fn
def compiled_kernel_ready(d, p, s):
    st = state(p)
    st["launches"] += 1
    launch_whole(d, s, TPC_0, st["level"], host_order(d, s))
'''

#: Run in the copy: a small seeded simulation under the toy policy, compiled.
RUN_TOY = f"""
import json

import drivers
from drivers.vgpu.policies import POLICY_NAMES, make_policy
from drivers.vgpu.presets import a100, scaled
from drivers.vgpu.sharing import Simulation, Tenant
from drivers.vgpu.sharing.arrivals import poisson_times_ns
from drivers.vgpu.sharing.epoch import ENTER
from drivers.vgpu.traces import Workload
from drivers.vgpu.work import KernelDesc


def workload(name, kernels):
    total = sum(k.block_duration_ns for k in kernels)
    return Workload(name, tuple(kernels), total, (0,) * len(kernels), "test")


hp = workload("hp", [KernelDesc("hp.a", 10, 2, 20_000), KernelDesc("hp.b", 28, 2, 30_000)])
be = workload("be", [KernelDesc("be.a", 56, 2, 50_000), KernelDesc("be.b", 14, 2, 80_000)])
duration_ns = 20_000_000
tenants = (
    Tenant("hp", hp, "open", poisson_times_ns(500.0, duration_ns, seed=3), slo_ns=500_000),
    Tenant("be", be, "be", run_ahead=8),
)
sim = Simulation(
    tenants, make_policy("toy", level={TOY_PRIORITY}), spec=scaled(a100, 14),
    duration_ns=duration_ns,
)
result = sim.run()
log = sim.atom_log()
print(json.dumps({{
    "drivers": drivers.__file__,
    "policy_names": POLICY_NAMES,
    "interpreted": sim.loop.interpreted,
    "compiled_signatures": len(ENTER.signatures),
    "atoms": len(log),
    "masks": sorted({{row[5] for row in log}}),
    "priorities": sorted({{row[6] for row in log}}),
    "completed": sum(s.completed for s in result.streams),
    "extra": result.extra,
}}))
"""


def python_files(root: Path) -> dict[str, str]:
    """The .py files under `root` (none from __pycache__), by their path relative to it."""
    return {
        str(path.relative_to(root)): path.read_text()
        for path in sorted(root.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def add_registry_line(registry: Path, line: str) -> None:
    """`line`, a new last line of the registry's `POLICY_FILES`."""
    text = registry.read_text()
    end = text.index("\n)\n", text.index("POLICY_FILES = ("))
    registry.write_text(f'{text[:end]}\n    "{line}",{text[end:]}')


def in_copy(root: Path, args: list[str], timeout_s: int) -> str:
    """Run Python with `args` in the copy at `root` (first on the path, its own
    numba cache); its output, once it has succeeded."""
    env = dict(os.environ)
    env.pop("NUMBA_DISABLE_JIT", None)  # the point is the compiled loop
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    env["NUMBA_CACHE_DIR"] = str(root.parent / "numba-cache")
    done = subprocess.run(
        [sys.executable, *args], cwd=root, env=env, capture_output=True, text=True,
        timeout=timeout_s, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow  # a cold compile of the whole loop, in a subprocess
def test_a_new_policy_is_one_file_and_one_registry_line_and_runs_compiled(tmp_path):
    original = python_files(DRIVERS)
    root = tmp_path / "tree"
    for name, text in original.items():
        path = root / "drivers" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    copy = root / "drivers"
    (copy / "vgpu" / "policies" / "toy.py").write_text(TOY_POLICY)
    add_registry_line(copy / "vgpu" / "sharing" / "registry.py", TOY_LINE)
    in_copy(root, ["-m", "drivers.vgpu.sharing.registry"], timeout_s=300)

    edited = python_files(copy)
    assert edited.keys() - original.keys() == {"vgpu/policies/toy.py"}
    assert original.keys() <= edited.keys()
    changed = {name for name, text in original.items() if edited[name] != text}
    assert changed == {"vgpu/sharing/registry.py", "vgpu/sharing/dispatch.py"}
    registry_diff = difflib.ndiff(
        original["vgpu/sharing/registry.py"].splitlines(),
        edited["vgpu/sharing/registry.py"].splitlines(),
    )
    assert [d for d in registry_diff if d[:1] in "+-"] == [f'+     "{TOY_LINE}",']
    assert "import drivers.vgpu.policies.toy as" in edited["vgpu/sharing/dispatch.py"]

    run = json.loads(in_copy(root, ["-c", RUN_TOY], timeout_s=900).splitlines()[-1])
    assert Path(run["drivers"]).resolve().is_relative_to(copy)
    assert run["policy_names"] == [*POLICY_NAMES, "toy"]
    assert run["interpreted"] is False and run["compiled_signatures"] > 0
    assert run["masks"] == [1], "every atom on TPC 0 only"
    assert run["priorities"] == [TOY_PRIORITY]
    assert run["completed"] > 0
    assert run["extra"] == {"launches": run["atoms"]}, "the named state counted each launch"

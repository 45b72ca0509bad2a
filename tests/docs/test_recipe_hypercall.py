"""docs/recipes/hypercall.md, walked through: a new hypercall is a number, a handler and a
row of `HYPERCALL_TABLE`, and a guest's task can call it.

The test makes the recipe's three edits to a copy of `kernel/hypervisor/hypercall.py` (in a
temporary copy of the `kernel` package, so the tree is not touched), then, in a fresh
interpreter that imports the copy, boots a host with a guest whose task makes the call.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPE = (ROOT / "docs/recipes/hypercall.md").read_text()

NUMBER = "    QUEUE_KIND = 6\n"
HANDLER = '''def hc_queue_kind(vm: VmContext, queue: int) -> str:
    """Whether virtqueue `queue` of the VM is a GPU queue ("gpu") or another ("io")."""
    if queue not in vm.queues:
        raise HypercallError(Status.ENOENT, f"the VM has no queue {queue}")
    return "gpu" if queue in vm.gpu_queues else "io"
'''
ROW = '        Hypercall(Hc.QUEUE_KIND, hc_queue_kind, (Param("queue", int, 0, 0xFFFF),)),\n'

GUEST = """
import json
from kernel import Kernel, KernelConfig
from kernel.hypervisor import Hypervisor
from kernel.hypervisor.hypercall import Hc, HYPERCALL_TABLE
from kernel.traps import Hypercall

host = Kernel(seed=0, name="host", gpu=None).boot()
hv = Hypervisor(host)
vm = hv.create("g", KernelConfig(seed=1, gpu=None, frames=128)).start()
answers = []

def asks(proc):
    for args in [(0,), (1 << 16,), (True,)]:
        answers.append(list((yield Hypercall(6, args))))

vm.kernel.spawn(asks)
host.machine.run(until=host.machine.now_ns + 1_000_000)
named = getattr(Hc, "QUEUE_KIND", None)
print(json.dumps({"has_row": 6 in HYPERCALL_TABLE, "named": named == 6, "answers": answers}))
hv.shutdown()
host.machine.shutdown()
"""


def test_the_recipe_shows_the_edits_this_test_makes():
    for snippet in (NUMBER, HANDLER, ROW):
        assert snippet in RECIPE


def _guest_answers(kernel_root: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{kernel_root}{os.pathsep}{ROOT}"}
    out = subprocess.run(
        [sys.executable, "-c", GUEST],
        env=env,
        cwd=kernel_root,  # `python -c` puts its working directory first on the path
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_a_guest_calls_the_hypercall_the_recipe_adds(tmp_path):
    shutil.copytree(
        ROOT / "kernel", tmp_path / "kernel", ignore=shutil.ignore_patterns("__pycache__")
    )
    source = tmp_path / "kernel/hypervisor/hypercall.py"
    text = source.read_text()
    for anchor, addition in (
        ("    GPU_SUBMIT = 5\n", NUMBER),
        ("\n\n@attrs.frozen\nclass Hypercall:", "\n\n" + HANDLER.rstrip("\n")),
        (
            '        Hypercall(Hc.GPU_SUBMIT, hc_gpu_submit, (Param("queue", int, 0, 0xFFFF),)),\n',
            ROW,
        ),
    ):
        assert text.count(anchor) == 1, anchor
        text = text.replace(
            anchor, anchor + addition if anchor.endswith("\n") else addition + anchor
        )
    source.write_text(text)

    got = _guest_answers(tmp_path)
    assert got["has_row"] and got["named"]
    no_queue, too_big, a_bool = got["answers"]
    assert no_queue == [2, "the VM has no queue 0"]  # ENOENT: a guest without a GPU
    assert too_big[0] == 22 and "outside 0..65535" in too_big[1]  # EINVAL, handler not run
    assert a_bool[0] == 22 and "must be an int" in a_bool[1]


def test_without_the_row_the_same_call_is_enosys():
    got = _guest_answers(ROOT)  # the tree as it is
    assert not got["has_row"] and not got["named"]
    assert [status for status, _ in got["answers"]] == [38, 38, 38]  # ENOSYS

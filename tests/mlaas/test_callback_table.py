"""The MLaaS callback table (`kernel.mlaas.advisors.CALLBACK_TABLE`) is the
one place a callback is described, and adding one follows
docs/recipes/mlaas-callback.md.

The recipe test edits a temporary copy of the `kernel` package as the recipe
says (a no-op method on the base, a validator, a row), then, in a fresh
interpreter that imports the copy, asks the new callback of an in-process
and of an isolated module through the derived wrapper (`bindings.advise`):
a copy, because an isolated module's child imports the kernel package from
disk and would not see a row added at run time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from kernel.mlaas import advisors, child, isolated
from kernel.mlaas.advisors import (
    ANSWER_KINDS,
    ARG_KINDS,
    BASES,
    CALLBACK_TABLE,
    CALLBACKS,
    LIFECYCLE_SPECS,
    callbacks_of,
)

ROOT = Path(__file__).resolve().parents[2]

# -- the table is complete, and the only one -------------------------------------------


def test_every_callback_of_every_base_has_a_row_and_nothing_else_does():
    for kind, base in BASES.items():
        assert set(callbacks_of(base)) == set(CALLBACKS[kind])
        assert all(CALLBACK_TABLE[name].kind == kind for name in CALLBACKS[kind])
    assert sum(len(names) for names in CALLBACKS.values()) == len(CALLBACK_TABLE)


def test_every_row_has_an_encoder_a_rebuilder_and_a_validator():
    assert set(isolated.ENCODE_ARG) == set(child.REBUILD_ARG) == ARG_KINDS
    assert set(isolated.DECODE_ANSWER) == set(child.ENCODE_ANSWER) == ANSWER_KINDS
    for spec in (*CALLBACK_TABLE.values(), *LIFECYCLE_SPECS.values()):
        assert all(kind in ARG_KINDS for kind in spec.args), spec
        assert spec.answer in ANSWER_KINDS, spec
        assert callable(spec.check), spec
        assert isolated._METHODS[spec.name].__name__ == spec.name
    for spec in CALLBACK_TABLE.values():
        if not spec.notice:
            assert spec.check is not advisors._no_answer, f"{spec.name} has no validator"


#: Tables of callback names that lived outside advisors.py before the table.
GONE = ("_ENCODE", "_DECODE", "NOTICES", "_REBUILD", "_answer_of", "_victim", "_slice",
        "_chosen_pid", "_masks")  # fmt: skip


def test_no_other_module_keeps_a_table_of_callback_names():
    for path in sorted((ROOT / "kernel").rglob("*.py")):
        if path.name == "advisors.py":
            continue
        text = path.read_text()
        for name in GONE:
            assert not re.search(rf"\b{name}\b\s*[:=(]", text), f"{path}: {name}"
        # A dict literal keyed by callback names is a second table.
        for callback in CALLBACK_TABLE:
            assert not re.search(rf'"{callback}"\s*:', text), f"{path} keys a dict by {callback!r}"
    for path in (ROOT / "kernel/sched.py", ROOT / "kernel/memory.py"):
        assert "not a slice" not in path.read_text() and "ns <= 0" not in path.read_text()


# -- the recipe ---------------------------------------------------------------------------

BASE_METHOD = '''
    def preferred_cpu(self, task: TaskView, ncpus: int) -> int | None:
        """The CPU, in [0, ncpus), that `task` should wake on."""
        return None
'''

VALIDATOR = """
def _check_cpu(answer: Any, task: Any, ncpus: int) -> int | None:
    from kernel.mlaas.answers import InvalidAnswer, plain_optional_int

    cpu = plain_optional_int(answer, "preferred_cpu's answer")
    if cpu is not None and not 0 <= cpu < ncpus:
        raise InvalidAnswer(f"preferred_cpu returned {cpu}, not a CPU in [0, {ncpus})")
    return cpu


"""

ROW = '        CallbackSpec("preferred_cpu", "sched", False, ("task", "plain"), _check_cpu),\n'

MODULE = """
from kernel.mlaas import SchedAdvisor


class Toy(SchedAdvisor):
    name = "{name}"

    def preferred_cpu(self, task, ncpus):
        return {answer}
"""

CALLER = """
import json, sys
from kernel import Kernel
from kernel.traps import Compute
from kernel.mlaas.bindings import advise

out = {}
for mode, isolated in (("in_process", False), ("isolated", True)):
    for name in ("good", "bad"):
        k = Kernel(seed=0, cpus=1, frames=64)
        rec = k.mlaas.insmod(sys.argv[1] + f"/{name}.py", isolated=isolated)
        pid = k.spawn(lambda proc: (yield Compute(10)), name="t")
        view = k.mlaas.view_of(k.tasks[pid])
        first = advise(k.mlaas, "preferred_cpu", view, 4)
        k.run()
        report = rec.report
        out[f"{mode}/{name}"] = {
            "answer": first, "pid": pid, "state": rec.state,
            "reason": report.reason if report else None,
            "message": report.message if report else None,
            "exit": k.exit_codes[pid],
        }
        k.shutdown()
print(json.dumps(out))
"""


def _follow_the_recipe(copy: Path) -> None:
    shutil.copytree(ROOT / "kernel", copy / "kernel", ignore=shutil.ignore_patterns("__pycache__"))
    path = copy / "kernel/mlaas/advisors.py"
    text = path.read_text()
    anchor = '        """`task` exited after using `runtime_ns` of CPU time."""\n'
    assert text.count(anchor) == 1
    text = text.replace(anchor, anchor + BASE_METHOD)  # 1. the no-op default on its base
    anchor = "@attrs.frozen\nclass CallbackSpec"
    text = text.replace(anchor, VALIDATOR + anchor)  # 2. its validator
    anchor = '        CallbackSpec("frequency",'
    text = text.replace(anchor, ROW + anchor)  # 3. its row
    path.write_text(text)


def test_a_new_callback_is_a_row_and_a_caller_in_process_and_isolated(tmp_path):
    _follow_the_recipe(tmp_path)
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "good.py").write_text(MODULE.format(name="good", answer="task.pid % ncpus"))
    (modules / "bad.py").write_text(MODULE.format(name="bad", answer="ncpus + 5"))
    (tmp_path / "caller.py").write_text(textwrap.dedent(CALLER))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, str(tmp_path / "caller.py"), str(modules)],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.splitlines()[-1])
    for mode in ("in_process", "isolated"):
        good, bad = out[f"{mode}/good"], out[f"{mode}/bad"]
        assert good["answer"] == good["pid"] % 4 and good["state"] == "live", good
        # A bad answer ejects the module as invalid; the caller gets None and
        # takes its default; the task still runs to its end.
        assert bad["answer"] is None and bad["reason"] == "invalid", bad
        assert "not a CPU in [0, 4)" in bad["message"], bad
        assert good["exit"] == bad["exit"] == 0

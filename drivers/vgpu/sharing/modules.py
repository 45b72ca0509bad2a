"""The policies' MLaaS modules, written from the policies (`drivers/vgpu/sharing`).

Every sharing policy ships as a thin GPU advisor, `mlaas_modules/gpu_<policy>.py`,
that names the policy and carries its parameters.  A module sees only the
advisor API (`kernel.mlaas`), so it cannot import the policy it selects:
its file is written from the policy's declaration (`summary`, `PARAMETERS`
and the constructor's defaults) by `module_source`, and a test holds every
file to it.  After changing a policy's parameters, rewrite the files with

    python -m drivers.vgpu.sharing.modules
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from drivers.vgpu.policies import POLICY_NAMES, policy_class
from drivers.vgpu.sharing.advised import policy_module

#: The per-call budget every policy module declares.
MODULE_BUDGET_US = 200
#: Where the modules live.
MODULES_DIR = Path(__file__).resolve().parents[3] / "mlaas_modules"
LINE = 100


def _literal(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _params_lines(params: dict[str, Any]) -> list[str]:
    items = [f"{json.dumps(k)}: {_literal(v)}" for k, v in params.items()]
    one_line = "    params = {" + ", ".join(items) + "}"
    if len(one_line) <= LINE:
        return [one_line]
    return ["    params = {", *(f"        {item}," for item in items), "    }"]


def module_source(name: str) -> str:
    """The text of policy `name`'s module file."""
    cls = policy_class(name)
    module = policy_module(name)
    class_name = "".join(part.capitalize() for part in module.split("_"))
    head = textwrap.fill(f'"""{module}: {cls.summary}', LINE)
    lines = [
        head,
        "",
        f"Selects the vGPU's `{name}` sharing policy (drivers/vgpu/policies) while the",
        "kernel runs; its parameters are the policy's parameter set.",
        '"""',
        "",
        "from kernel.mlaas import GpuAdvisor",
        "",
        "",
        f"class {class_name}(GpuAdvisor):",
        f'    name = "{module}"',
        f'    sharing_policy = "{name}"',
        f"    budget_us = {MODULE_BUDGET_US}",
    ]
    params = cls.module_params()
    if params:
        lines += _params_lines(params)
    return "\n".join(lines) + "\n"


def module_path(name: str, directory: Path = MODULES_DIR) -> Path:
    return directory / f"{policy_module(name)}.py"


def write_modules(directory: Path = MODULES_DIR) -> list[Path]:
    """Write every policy's module into `directory`; the files that changed."""
    changed = []
    for name in POLICY_NAMES:
        path = module_path(name, directory)
        text = module_source(name)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed


if __name__ == "__main__":
    for path in write_modules(Path(sys.argv[1]) if len(sys.argv) > 1 else MODULES_DIR):
        print(f"wrote {path}")

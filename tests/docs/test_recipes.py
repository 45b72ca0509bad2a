"""The recipes in docs/recipes show what the tests that walk them through do.

Each recipe is followed step by step by a test: a new sharing policy by
tests/policies/test_new_policy.py, an MLaaS callback by tests/mlaas/test_callback_table.py,
a hypercall, an experiment and a lab by tests/docs/test_recipe_*.py. Here: the code a recipe
shows is the code its test adds, so the two cannot drift apart.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "docs" / "recipes"


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(f"_recipe_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_sharing_policy_recipe_shows_the_toy_policy_its_test_adds():
    test = _module(ROOT / "tests/policies/test_new_policy.py")
    recipe = (RECIPES / "sharing-policy.md").read_text()
    assert test.TOY_POLICY in recipe
    assert f'"{test.TOY_LINE}"' in recipe


def test_every_recipe_names_the_test_that_walks_it_through():
    for page, test in {
        "sharing-policy.md": "tests/policies/test_new_policy.py",
        "mlaas-callback.md": "tests/mlaas/test_callback_table.py",
        "hypercall.md": "tests/docs/test_recipe_hypercall.py",
        "experiment.md": "tests/docs/test_recipe_experiment.py",
        "lab.md": "tests/docs/test_recipe_lab.py",
    }.items():
        assert test in (RECIPES / page).read_text(), page
        assert (ROOT / test).is_file(), test

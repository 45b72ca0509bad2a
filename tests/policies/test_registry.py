"""The policies' registry and its generated dispatch (`drivers/vgpu/sharing`)."""

from __future__ import annotations

import pytest

from drivers.vgpu.policies import POLICIES, POLICY_NAMES, make_policy
from drivers.vgpu.sharing import dispatch, registry
from drivers.vgpu.sharing.epoch_run import compiled_module


def test_dispatch_is_generated_from_the_registry_and_fresh():
    want = registry.dispatch_source()
    assert registry.DISPATCH.read_text() == want, (
        "dispatch.py is stale: run `python -m drivers.vgpu.sharing.registry`"
    )


def test_the_policy_names_follow_the_registry_in_the_order_users_see():
    assert POLICY_NAMES == (
        "timeslice", "mps", "mps-limit", "priority", "mig", "tgs", "reef", "orion", "lithos",
    )  # fmt: skip
    assert [POLICIES[name] for name in POLICY_NAMES] == registry.policy_classes()


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_shipped_policy_has_registered_compiled_callbacks(name):
    assert compiled_module(make_policy(name)) in dispatch.POLICY_IDS


def test_a_file_without_callbacks_runs_another_files_and_has_no_id_of_its_own():
    assert "drivers.vgpu.policies.priority" not in dispatch.POLICY_IDS
    assert compiled_module(make_policy("priority")) == "drivers.vgpu.policies.mps"


def test_a_registered_file_with_callbacks_but_no_kernel_ready_is_refused(tmp_path, monkeypatch):
    (tmp_path / "half_policy.py").write_text("def compiled_timer(d, p, kind, arg):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="half_policy: .* needs compiled_kernel_ready"):
        registry.dispatch_source(["half_policy:Half"])


def test_two_registered_policies_of_one_name_are_refused():
    with pytest.raises(ValueError, match="share a name: mps"):
        registry.policy_classes(["drivers.vgpu.policies.mps:Mps", "drivers.vgpu.policies.mps:Mps"])


@pytest.mark.parametrize(
    "line", ["drivers.vgpu.policies.mps", "drivers.vgpu.policies.mps:", ":Mps"]
)
def test_a_registry_line_without_its_module_or_classes_is_refused(line):
    with pytest.raises(ValueError, match="expected 'module:Class,Class'"):
        registry.parse_line(line)


def test_a_compiled_policy_over_more_streams_than_its_state_holds_says_so():
    from drivers.vgpu.policies.timeslice import STATE
    from drivers.vgpu.sharing.compiled import MAX_STREAMS, new_state

    with pytest.raises(ValueError, match=f"at most {MAX_STREAMS} streams"):
        new_state(STATE, 0, slice_ns=[1] * (MAX_STREAMS + 1))

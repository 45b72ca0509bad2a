"""The compiled policies' registry and its generated dispatch (`drivers/vgpu/sharing`)."""

from __future__ import annotations

import pytest

from drivers.vgpu.policies import POLICIES, make_policy
from drivers.vgpu.sharing import dispatch, registry
from drivers.vgpu.sharing.epoch_run import compiled_module


def test_dispatch_is_generated_from_the_registry_and_fresh():
    want = registry.dispatch_source()
    assert registry.DISPATCH.read_text() == want, (
        "dispatch.py is stale: run `python -m drivers.vgpu.sharing.registry`"
    )


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_shipped_policy_has_registered_compiled_callbacks(name):
    assert compiled_module(make_policy(name)) in dispatch.POLICY_IDS


def test_a_registered_module_without_kernel_ready_is_refused():
    with pytest.raises(ValueError, match="compiled_kernel_ready"):
        registry.dispatch_source(["drivers.vgpu.policies.base"])


def test_a_compiled_policy_over_more_streams_than_its_state_holds_says_so():
    from drivers.vgpu.policies.compiled import MAX_STREAMS, new_state
    from drivers.vgpu.policies.timeslice import STATE

    with pytest.raises(ValueError, match=f"at most {MAX_STREAMS} streams"):
        new_state(STATE, 0, slice_ns=[1] * (MAX_STREAMS + 1))

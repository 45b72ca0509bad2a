"""Each policy as an MLaaS GPU advisor, selected while the simulation runs."""

from __future__ import annotations

import pytest

from drivers.vgpu.policies import POLICY_NAMES, policy_class
from drivers.vgpu.sharing import Simulation
from drivers.vgpu.sharing.advised import follow_advisors, policy_kwargs
from drivers.vgpu.sharing.modules import module_path, module_source
from kernel import Kernel
from tests.policies.conftest import SPEC

MODULES = {name: "gpu_" + name.replace("-", "_") for name in POLICY_NAMES}


@pytest.fixture
def kernel():
    k = Kernel(seed=0, cpus=1, frames=64)
    yield k
    k.shutdown()


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_every_policy_ships_as_a_loadable_gpu_advisor(kernel, policy):
    rec = kernel.mlaas.insmod(MODULES[policy])
    assert rec.state == "live" and rec.kind == "gpu"
    name, params = kernel.mlaas.gpu.sharing_policy()
    assert name == policy
    kernel.mlaas.rmmod(MODULES[policy])


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_each_module_is_written_from_its_policys_declaration(policy):
    assert module_path(policy).read_text() == module_source(policy), (
        "rewrite the modules: python -m drivers.vgpu.sharing.modules"
    )


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_a_modules_defaults_build_the_policys_defaults(kernel, policy):
    kernel.mlaas.insmod(MODULES[policy])
    name, params = kernel.mlaas.gpu.sharing_policy()
    assert params == policy_class(policy).module_params()
    built = policy_class(policy)(**policy_kwargs(name, params))
    default = policy_class(policy)()
    # A module's 0 stands for a constructor's None (orion's duration cap: "by the profile").
    assert {k: v or None for k, v in vars(built).items()} == {
        k: v or None for k, v in vars(default).items()
    }


def test_insmod_rmmod_and_parameters_switch_the_running_policy(kernel, small_tenants):
    sim = Simulation(small_tenants, policy=None, spec=SPEC, duration_ns=12_000_000)
    follow_advisors(sim, kernel.mlaas, period_ns=1_000_000)
    assert sim.policy.name == "mps"  # no GPU advisor: the default
    seen = []

    def note():
        seen.append(sim.policy.label)

    sim.call_at(500_000, kernel.mlaas.insmod, MODULES["lithos"])
    sim.call_at(1_500_000, note)
    sim.call_at(3_500_000, kernel.mlaas.rmmod, MODULES["lithos"])
    sim.call_at(3_600_000, kernel.mlaas.insmod, MODULES["reef"])
    sim.call_at(4_500_000, note)
    sim.call_at(6_500_000, kernel.mlaas.rmmod, MODULES["reef"])
    sim.call_at(6_600_000, kernel.mlaas.insmod, MODULES["lithos"], {"rightsizing": True})
    sim.call_at(7_500_000, note)
    result = sim.run()
    assert seen == ["lithos", "reef", "lithos+rightsizing"]
    assert all(s.completed > 0 for s in result.streams)


def test_a_power_advisor_sets_the_clock(kernel, small_tenants):
    kernel.mlaas.insmod("fixed_clock", {"clock_mhz": 1005})
    sim = Simulation(small_tenants, policy=None, spec=SPEC, duration_ns=3_000_000)
    follow_advisors(sim, kernel.mlaas, period_ns=1_000_000)
    sim.run()
    assert sim.gpu.clock_mhz == 1005

"""Devices and provenance: the V100 preset, where a profile was measured, and
how its durations are carried to the GPU simulated (`traces.carry_to`)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.vgpu.errors import InvalidArgument
from drivers.vgpu.presets import PRESETS, a100, get_preset, h100, v100
from drivers.vgpu.traces import (
    ORION_DEVICE,
    Workload,
    carry_to,
    device_factors,
    load_orion_csv,
    load_workload,
    synthetic_workload,
)
from drivers.vgpu.work import KernelDesc
from exp.scenario import load_scenario, parse_scenario, shipped
from exp.sharing import build_tenants, sharing_parser
from exp.sharing.catalogue import CATALOGUE
from tests.policies.conftest import WORKLOADS

HP = {"name": "HP A", "model": "resnet50", "arrivals": "poisson", "rate_per_s": 20.0}
ORION = WORKLOADS / "orion"


def measured(kernels: list[KernelDesc], device: str | None = "v100") -> Workload:
    total = sum(k.block_duration_ns for k in kernels)
    return Workload("m", tuple(kernels), total, (0,) * len(kernels), "m.csv", device)


def test_v100_matches_its_published_figures():
    assert (v100.n_tpcs, v100.n_sms, v100.memory_bytes) == (40, 80, 16 * 10**9)
    assert v100.bandwidth_gbps == 900.0 and v100.tdp_w == 300.0
    assert v100.max_clock_mhz == 1530 and 1530 in v100.clocks_mhz
    assert v100.idle_power_w < v100.peak_power_w <= v100.tdp_w
    assert get_preset("V100") is v100 and ORION_DEVICE == "v100"


def test_a_kernel_measured_where_it_is_simulated_is_not_carried():
    w = measured([KernelDesc("k", 100, 2, 50_000, mem_fraction=0.8)], "a100")
    assert carry_to(w, a100) is w
    assert carry_to(measured(w.kernels, None), h100).kernels == w.kernels
    assert carry_to(synthetic_workload(CATALOGUE["resnet50"][1]), v100).carried_to is None


def test_compute_time_scales_with_the_sm_rate_and_memory_time_with_the_sm_bandwidth():
    compute, memory = device_factors(v100, a100)
    # 64 FP32 lanes per SM on both: the clocks' ratio, to the published peaks' rounding.
    assert compute == pytest.approx(1530 / 1410, rel=0.005)
    assert memory == pytest.approx((900 / 80) / (1555 / 108))
    pure = measured(
        [KernelDesc("c", 160, 2, 1_000_000, 0.0), KernelDesc("m", 160, 2, 1_000_000, 1.0)]
    )
    c, m = carry_to(pure, a100).kernels
    assert c.block_duration_ns == round(1_000_000 * compute) and c.mem_fraction == 0.0
    assert m.block_duration_ns == round(1_000_000 * memory) and m.mem_fraction == 1.0
    # Carried back, a kernel is (to the rounding) what was measured.
    back = carry_to(measured(carry_to(pure, a100).kernels, "a100"), v100).kernels
    assert [k.block_duration_ns for k in back] == pytest.approx([1_000_000] * 2, rel=1e-6)


@settings(max_examples=200, deadline=None)
@given(
    duration=st.integers(1, 10**9),
    mem=st.floats(0.0, 1.0),
    source=st.sampled_from(sorted(PRESETS)),
    target=st.sampled_from(sorted(PRESETS)),
)
def test_a_carried_block_lies_between_its_compute_and_memory_scalings(
    duration, mem, source, target
):
    kernel = KernelDesc("k", 64, 2, duration, mem_fraction=mem)
    (carried,) = carry_to(measured([kernel], source), get_preset(target)).kernels
    compute, memory = device_factors(get_preset(source), get_preset(target))
    low, high = sorted((compute, memory))
    assert round(duration * low) - 1 <= carried.block_duration_ns <= round(duration * high) + 1
    assert 0.0 <= carried.mem_fraction <= 1.0 and carried.grid_blocks == kernel.grid_blocks


@pytest.mark.skipif(not ORION.is_dir(), reason="../shared/workloads is absent")
def test_an_orion_profile_is_a_v100_measurement_carried_to_the_a100():
    raw = load_orion_csv(ORION / "resnet50_4_fwd.csv")
    assert raw.measured_on == "v100" and raw.carried_to is None
    carried = carry_to(raw, a100)
    assert carried.carried_to == "a100" and carried.measured_on == "v100"
    assert carried.isolated_duration_ns(54) != raw.isolated_duration_ns(54)
    # The same file said to be measured on an A100 is read with its 108 SMs.
    as_a100 = load_orion_csv(ORION / "resnet50_4_fwd.csv", "a100")
    assert carry_to(as_a100, a100) is as_a100


def test_a_scenario_says_where_its_profiles_were_measured():
    top = parse_scenario({"measured_on": "v100", "tenants": [HP]}, "s.toml")
    assert top.roles[0].measured_on == "v100"
    own = parse_scenario(
        {"measured_on": "v100", "tenants": [{**HP, "measured_on": "h100"}]}, "s.toml"
    )
    assert own.roles[0].measured_on == "h100"
    assert parse_scenario({"tenants": [HP]}, "s.toml").roles[0].measured_on is None


@settings(max_examples=100, deadline=None)
@given(value=st.one_of(st.text(max_size=6), st.integers(), st.booleans(), st.none()),
       top=st.booleans())  # fmt: skip
def test_measured_on_is_a_preset_or_one_line_naming_the_key(value, top):
    table = {"tenants": [HP]} if value is None else (
        {"measured_on": value, "tenants": [HP]} if top else {"tenants": [{**HP, "measured_on": value}]})  # fmt: skip
    try:
        scenario = parse_scenario(table, "d.toml")
    except InvalidArgument as err:
        text = str(err)
        assert "\n" not in text and text.startswith("d.toml") and "measured_on" in text
        assert value not in PRESETS
    else:
        assert scenario.roles[0].measured_on in (*PRESETS, None)


@pytest.mark.skipif(not ORION.is_dir(), reason="../shared/workloads is absent")
@pytest.mark.parametrize("gpu", ["v100", "a100"])
def test_a_tenant_runs_its_profile_carried_to_the_gpu_simulated(gpu):
    roles = load_scenario(shipped("orion-stacking")).roles
    args = sharing_parser("t", "", duration_s=1.0, policies=None).parse_args(["--gpu", gpu])
    tenants = build_tenants(roles, args, 0, 100_000_000)
    raw = load_orion_csv(roles[0].profile)
    assert tenants[0].workload.measured_on == "v100"
    assert (tenants[0].workload == raw) == (gpu == "v100")
    assert sum(t.quota for t in tenants) == pytest.approx(1.0)


rows = st.lists(
    st.tuples(st.sampled_from([-1, 0, 1]), st.integers(1, 5000), st.integers(1, 10**7)),
    min_size=1, max_size=30,
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(rows=rows, source=st.sampled_from(sorted(PRESETS)), target=st.sampled_from(sorted(PRESETS)))
def test_any_profile_file_carries_within_its_devices_factors(
    tmp_path_factory, rows, source, target
):
    path = tmp_path_factory.mktemp("p") / "model.csv"
    path.write_text("Name,Profile,Memory_footprint,SM_usage,Duration\n"
                    + "".join(f'"k,{i}",{p},0,{sm},{d}\n' for i, (p, sm, d) in enumerate(rows)))  # fmt: skip
    raw = load_orion_csv(path, source)
    carried = carry_to(raw, get_preset(target))
    assert raw.measured_on == source and carried.measured_on == source
    assert (carried is raw) == (source == target)
    low, high = sorted(device_factors(get_preset(source), get_preset(target)))
    for before, after in zip(raw.kernels, carried.kernels, strict=True):
        b = before.block_duration_ns
        assert round(b * low) - 1 <= after.block_duration_ns <= round(b * high) + 1
        assert after.grid_blocks == before.grid_blocks and after.name == before.name


@pytest.mark.skipif(not ORION.is_dir(), reason="../shared/workloads is absent")
def test_a_model_named_on_a_command_line_is_carried_when_its_gpu_is_given():
    path = str(ORION / "resnet50_4_fwd.csv")
    assert load_workload(path).carried_to is None
    assert load_workload(path, simulated_on=a100) == carry_to(load_orion_csv(path), a100)
    assert load_workload("resnet50_b4_inference", simulated_on=a100).carried_to is None


@pytest.mark.skipif(not ORION.is_dir(), reason="../shared/workloads is absent")
def test_a_booted_programs_profile_is_carried_to_the_booted_gpu():
    """`inference-server` and `gpu-train` (malv serve) launch a V100 profile
    as it runs on the vGPU they were booted with."""
    from userland.inference import load_model

    path = str(ORION / "resnet50_4_fwd.csv")
    carried = carry_to(load_orion_csv(path), a100).kernels
    _, graph = load_model(path, 1, device="a100")
    assert [round(s.block_us * 1000) for s in graph.launches] == [
        k.block_duration_ns for k in carried
    ]
    _, as_measured = load_model(path, 1, device="v100")
    assert as_measured.launches != graph.launches

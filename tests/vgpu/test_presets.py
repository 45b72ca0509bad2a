"""GPU presets: published figures, the power model's shape, and validation."""

from __future__ import annotations

import attrs
import pytest

from drivers.vgpu.errors import InvalidArgument
from drivers.vgpu.presets import PRESETS, a100, get_preset, h100


def test_a100_matches_its_published_figures():
    assert (a100.n_tpcs, a100.n_sms, a100.memory_bytes) == (54, 108, 40 * 10**9)
    assert a100.bandwidth_gbps == 1555.0 and a100.tdp_w == 400.0
    clocks = list(a100.clocks_mhz)
    assert clocks[0] == 210 and clocks[-1] == 1410 and len(clocks) == 81
    assert all(b - a == 15 for a, b in zip(clocks, clocks[1:], strict=False))


def test_h100_matches_its_published_figures():
    assert (h100.n_tpcs, h100.n_sms, h100.memory_bytes) == (66, 132, 80 * 10**9)
    assert h100.bandwidth_gbps == 3350.0 and h100.tdp_w == 700.0
    assert h100.max_clock_mhz == 1980 and h100.clock_step_mhz == 15
    assert 10_000_000 <= h100.switch_latency_ns <= 100_000_000


@pytest.mark.parametrize("spec", list(PRESETS.values()), ids=list(PRESETS))
def test_peak_power_stays_within_tdp_and_idle_is_well_below(spec):
    assert spec.idle_power_w < spec.peak_power_w <= spec.tdp_w
    assert spec.power_w(0, spec.max_clock_mhz, 0) == spec.idle_power_w


def test_voltage_is_flat_below_the_ridge_and_linear_above():
    ridge = a100.ridge_clock_mhz
    assert a100.voltage_v(a100.min_clock_mhz) == a100.voltage_v(ridge) == a100.v_min
    above = [a100.voltage_v(f) for f in (ridge + 100, ridge + 200, ridge + 300)]
    assert above[1] - above[0] == pytest.approx(above[2] - above[1])
    assert above[1] > above[0] > a100.v_min


def test_dynamic_power_rises_faster_than_the_clock_above_the_ridge():
    low, high = 900, 1410
    ratio = a100.dynamic_power_per_tpc_w(high) / a100.dynamic_power_per_tpc_w(low)
    assert ratio > high / low


def test_memory_power_counts_only_delivered_bandwidth():
    full = a100.power_w(0, 1410, a100.bandwidth_mbps)
    assert a100.power_w(0, 1410, 3 * a100.bandwidth_mbps) == full
    assert full - a100.idle_power_w == pytest.approx(a100.mem_w_per_gbps * a100.bandwidth_gbps)


def test_get_preset_ignores_case_and_names_the_known_presets_when_unknown():
    assert get_preset("A100") is a100 and get_preset(" h100 ") is h100
    with pytest.raises(InvalidArgument, match="unknown GPU preset 'b200'.*a100, h100, v100"):
        get_preset("b200")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_tpcs": 0}, "n_tpcs must be positive"),
        ({"memory_bytes": -1}, "memory_bytes must be positive"),
        ({"min_clock_mhz": 1500}, "above max_clock_mhz"),
        ({"max_clock_mhz": 1400}, "whole number of 15 MHz steps"),
        ({"ridge_clock_mhz": 2000}, "outside the clock range"),
        ({"tdp_w": 100.0}, "exceeds the TDP"),
        ({"idle_power_w": -1.0}, "idle_power_w must be >= 0"),
        ({"switch_latency_ns": 0}, "switch_latency_ns must be positive"),
        ({"n_tpcs": 300}, "at most 256 TPCs"),
    ],
)
def test_invalid_specs_are_refused_with_a_clear_message(change, message):
    with pytest.raises(ValueError, match=message):
        attrs.evolve(a100, **change)


@pytest.mark.parametrize("clock", [1410, 210, 1005])
def test_check_clock_accepts_the_clock_table(clock):
    assert a100.check_clock(clock) == clock


@pytest.mark.parametrize(
    ("clock", "message"),
    [
        (195, "outside 210-1410"),
        (1425, "outside"),
        (1000, "not on the 15 MHz grid"),
        (1005.0, "integer"),
        (True, "integer"),
    ],
)
def test_check_clock_refuses_off_table_values(clock, message):
    with pytest.raises(InvalidArgument, match=message):
        a100.check_clock(clock)

"""Scenario files: the shipped ones reproduce the experiments' tenants, and
every mistake in a file is one line naming the file and the key."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.vgpu.errors import InvalidArgument
from drivers.vgpu.traces import Workload, implausible_duration
from drivers.vgpu.work import KernelDesc
from exp.scenario import load_scenario, parse_scenario, shipped
from exp.sharing import build_tenants, sharing_parser
from image.cli import main as malv
from tests.policies.conftest import WORKLOADS

HP = {"name": "HP A", "model": "resnet50", "arrivals": "poisson", "rate_per_s": 20.0}


def test_shipped_scenarios_name_the_experiments_tenants():
    stacking = load_scenario(shipped("stacking"))
    assert [(r.name, r.model, r.kind) for r in stacking.roles] == [
        ("HP A", "resnet50", "open"), ("HP B", "resnet101", "closed"), ("BE", "bert", "be"),
    ]  # fmt: skip
    assert stacking.roles[0].sized and stacking.roles[0].rate_per_s == 20.8
    hybrid = load_scenario(shipped("hybrid"))
    assert hybrid.roles[1].training and hybrid.roles[1].kind == "be"


@pytest.mark.skipif(not WORKLOADS.is_dir(), reason="../shared/workloads is absent")
def test_a_scenario_names_profiles_by_path():
    roles = load_scenario(shipped("orion-stacking")).roles
    assert roles[0].profile.endswith("resnet50_4_fwd.csv") and roles[0].model == ""


@pytest.mark.parametrize(
    "tenant, message",
    [
        ({**HP, "colour": "red"}, "unknown key 'colour'"),
        ({**HP, "rate_per_s": -1}, "tenants[0].rate_per_s: must be positive"),
        ({**HP, "rate_per_s": "fast"}, "rate_per_s: must be a finite number"),
        ({**HP, "rate_per_s": float("nan")}, "rate_per_s: must be a finite number"),
        ({**HP, "rate_per_s": True}, "rate_per_s: must be a finite number"),
        ({**HP, "model": "gpt9"}, "model: unknown 'gpt9'"),
        ({**HP, "profile": "x.csv"}, "exactly one of model"),
        ({k: v for k, v in HP.items() if k != "model"} | {"profile": "nope.csv"},
         "profile: nope.csv: no such file"),
        ({**HP, "arrivals": "file", "rate_per_s": 1.0}, "rate_per_s: only for arrivals"),
        ({**HP, "arrivals": "file", "file": "gone.json", "rate_per_s": None},
         "file: gone.json: no such file"),
        ({**HP, "priority": "best-effort"}, "runs closed loop"),
        ({**HP, "batch": 0}, "batch: must be a positive integer"),
        ({**HP, "slo_ms": 5.0, "slo_factor": 2.0}, "one of slo_ms or slo_factor"),
    ],
)  # fmt: skip
def test_each_bad_key_is_one_line_naming_the_file_and_key(tenant, message):
    tenant = {k: v for k, v in tenant.items() if v is not None}
    with pytest.raises(InvalidArgument) as err:
        parse_scenario({"tenants": [tenant]}, "my.toml")
    text = str(err.value)
    assert "\n" not in text and text.startswith("my.toml") and message in text


def test_a_scenario_needs_a_measured_tenant_and_distinct_names():
    be = {"name": "BE", "model": "bert", "priority": "best-effort"}
    with pytest.raises(InvalidArgument, match="high-priority tenant"):
        parse_scenario({"tenants": [be]}, "s.toml")
    with pytest.raises(InvalidArgument, match="names repeat"):
        parse_scenario({"tenants": [HP, HP]}, "s.toml")
    with pytest.raises(InvalidArgument, match=r"\[\[tenants\]\]"):
        parse_scenario({"tenants": []}, "s.toml")


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=8), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)  # fmt: skip
keys = st.sampled_from(["rate_per_s", "batch", "weight", "slo_ms", "slo_factor", "sized",
                        "kind", "priority", "arrivals", "offset_s", "speedup", "name", "nope"])  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(key=keys, value=scalars)
def test_any_value_at_any_key_parses_or_is_one_clear_line(key, value):
    tenant = {**HP, key: value}
    if value is None:
        del tenant[key]
    try:
        scenario = parse_scenario({"tenants": [tenant]}, "h.toml")
    except InvalidArgument as err:
        assert "\n" not in str(err) and str(err).startswith("h.toml")
    else:
        assert scenario.roles[0].weight > 0


@pytest.mark.parametrize(
    "text, message",
    [("[[tenants]\nname = 1", "bad.toml: not a TOML file"),
     (None, "bad.toml: cannot read the scenario"),
     (b"\xff\xfe", "bad.toml: not a TOML file")],
)  # fmt: skip
def test_malformed_toml_and_a_missing_file_are_one_line(tmp_path, text, message):
    bad = tmp_path / "bad.toml"
    if isinstance(text, bytes):
        bad.write_bytes(text)
    elif text is not None:
        bad.write_text(text)
    with pytest.raises(InvalidArgument, match=message) as err:
        load_scenario(bad)
    assert "\n" not in str(err.value)
    assert tomllib.loads(shipped("stacking").read_text())["tenants"]


def test_placeholder_durations_are_called_implausible():
    k = KernelDesc("k", 10, 2, 3)
    placeholder = Workload("m_fb0", (k,) * 50, 150, (0,) * 50, "m_fb0.csv")
    assert "m_fb0.csv" in implausible_duration(placeholder)
    real = Workload("m", (KernelDesc("k", 10, 2, 40_000),) * 50, 2_000_000, (0,) * 50, "m.csv")
    assert implausible_duration(real) is None


def test_a_run_too_short_for_a_p99_is_refused_with_the_count(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["exp", "stacking", "--duration", "0.5", "--policies", "mps", "--out", str(out)]
    assert malv(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'HP A'" in err[0] and "requests" in err[0] and "100" in err[0]
    assert not out.exists()


def test_a_training_tenant_runs_ahead_of_the_gpu_and_a_service_does_not():
    train = {"name": "T", "model": "resnet50_train", "kind": "training", "batch": 32}
    scenario = parse_scenario({"tenants": [HP, train]}, "t.toml")
    args = sharing_parser("t", "", duration_s=1.0, policies=None).parse_args([])
    service, training = build_tenants(scenario.roles, args, 0, 100_000_000)
    assert service.run_ahead == 0 and len(service.arrivals_ns) > 0
    assert training.kind == "closed" and training.run_ahead > 0

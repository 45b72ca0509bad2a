"""Image manifests (image/manifest.py): the shipped ones load, and a bad one
is refused with one line naming the file, the key and what was expected."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from image.builder import shipped_manifests, source_catalog
from image.manifest import Manifest, ManifestError, load, loads, parse
from kernel import KernelConfig

CATALOG = source_catalog()
SHIPPED = {path.stem: path for path in shipped_manifests()}


def manifest_of(text: str) -> Manifest:
    return loads(text.encode(), "lab.toml", CATALOG)


def refusal(text: str) -> str:
    with pytest.raises(ManifestError) as info:
        manifest_of(text)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("lab.toml: ")
    return message


MINIMAL = 'programs = ["init", "sh"]\n'


def test_the_shipped_images_are_default_course_research_and_vms():
    assert {"default", "course", "research", "vms"} <= set(SHIPPED)
    for name, path in SHIPPED.items():
        manifest = load(path, CATALOG)
        assert manifest.name == name
        assert manifest.description


def test_the_default_image_is_what_malv_boot_boots():
    manifest = load(SHIPPED["default"], CATALOG)
    assert manifest.config == KernelConfig()  # malv boot's defaults: an A100, 2 cpus, 2048 frames
    assert set(manifest.programs) >= {"init", "sh", "echo", "spin", "gpu-burn", "gpu-loop"}


def test_the_course_image_has_no_gpu_and_only_the_console_server():
    manifest = load(SHIPPED["course"], CATALOG)
    assert manifest.gpu is None
    assert [s.program for s in manifest.config.plan.servers] == ["console"]
    assert not any(p.startswith("gpu") for p in manifest.programs)


def test_the_research_image_preloads_learned_modules_and_offers_sharing_policies():
    manifest = load(SHIPPED["research"], CATALOG)
    preloaded = {m.name for m in manifest.modules if m.load}
    available = {m.name for m in manifest.modules if not m.load}
    assert {"learned_srpt", "learned_warmth"} <= preloaded
    assert {"gpu_lithos", "gpu_mps", "gpu_mig"} <= available


def test_the_vms_image_gives_two_guests_gpu_shares_and_their_modules():
    manifest = load(SHIPPED["vms"], CATALOG)
    assert [(vm.name, vm.gpu_share) for vm in manifest.vms] == [("vm1", 60), ("vm2", 40)]
    assert manifest.vms[1].allowed_modules == ("lru",)
    assert {"vgpu-front", "vgpu-backend"} <= set(manifest.programs)  # a gpu share implies them


def test_a_minimal_manifest_boots_the_standard_plan_and_its_server_programs():
    manifest = manifest_of(MINIMAL)
    assert manifest.config == KernelConfig()
    assert manifest.programs == ("init", "sh", "console", "vgpu")


def test_kernel_settings_module_params_and_init_script_are_read():
    manifest = manifest_of(
        MINIMAL
        + 'init = ["ps", "lsmod"]\n'
        + '[kernel]\ncpus = 4\nframes = 64\nseed = 9\nslice_ns = 5000\ngpu = "none"\n'
        + '[[modules]]\nname = "lru"\nparams = { window = 3 }\n'
    )
    assert manifest.config == KernelConfig(cpus=4, frames=64, seed=9, slice_ns=5000, gpu=None)
    assert manifest.init == ("ps", "lsmod")
    assert manifest.modules[0].name == "lru" and manifest.modules[0].params == {"window": 3}


@pytest.mark.parametrize(
    "text, key, expected",
    [
        (MINIMAL + "colour = 1\n", "colour", "unknown key"),
        (MINIMAL + "[kernel]\nmemory = 3\n", "kernel.memory", "unknown key"),
        ("description = 'x'\n", "programs", "missing"),
        ('programs = ["init", "sh", "doom"]\n', "programs[2]", "no program named 'doom'"),
        ('programs = ["init"]\n', "programs", "'sh'"),
        ('programs = "sh"\n', "programs", "expected a list of strings"),
        (MINIMAL + "[kernel]\ncpus = 'two'\n", "kernel.cpus", "must be an integer"),
        (MINIMAL + "[kernel]\ncpus = 0\n", "kernel.cpus", "between 1 and 64"),
        (MINIMAL + '[kernel]\ngpu = "b200"\n', "kernel.gpu", "a100, h100, v100"),
        (MINIMAL + '[[modules]]\nname = "nosuch"\n', "modules[0].name", "no module named"),
        (MINIMAL + '[[modules]]\nname = "lru"\nload = "yes"\n', "modules[0].load", "true or"),
        (MINIMAL + '[[modules]]\nname = "lru"\nparams = { a = [1] }\n', "modules[0].params.a", ""),
        (
            MINIMAL + '[[vms]]\nname = "g"\nallowed_modules = ["lru"]\n',
            "vms[0].allowed_modules",
            "",
        ),
        (
            MINIMAL + '[kernel]\ngpu = "none"\n[[vms]]\nname = "g"\ngpu_share = 50\n',
            "gpu_share",
            "",
        ),
        (MINIMAL + '[[vms]]\nname = "g"\ngpu_share = 101\n', "vms[0].gpu_share", "0 to 100"),
        (MINIMAL + '[[servers]]\nname = "console"\nprogram = "nope"\n', "servers", "nope"),
        (
            MINIMAL + '[[servers]]\nname = "c"\nprogram = "console"\ndevices = ["disk"]\n',
            "servers[0]",
            "disk",
        ),
        ("programs = [", "not TOML", ""),
    ],
)
def test_a_bad_manifest_is_refused_naming_the_key_and_what_was_expected(text, key, expected):
    message = refusal(text)
    assert key in message
    assert expected in message


def test_a_missing_file_is_refused_naming_it(tmp_path):
    with pytest.raises(ManifestError, match="nothere.toml: cannot read it"):
        load(tmp_path / "nothere.toml", CATALOG)


# -- fuzzing: whatever the input, a Manifest or one ManifestError ----------------

scalars = st.one_of(
    st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8), st.none()
)
keys = st.sampled_from(
    ["programs", "kernel", "cpus", "gpu", "modules", "name", "vms", "gpu_share", "init", "x"]
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4)
)


def parses_or_refuses(table) -> None:
    try:
        assert isinstance(parse(table, "fuzz.toml", CATALOG), Manifest)
    except ManifestError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("fuzz.toml: ")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, values, max_size=6))
def test_any_table_gives_a_manifest_or_one_manifest_error(table):
    parses_or_refuses(table)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(SHIPPED)),
    st.sampled_from(["kernel", "programs", "modules", "vms", "init", "servers", "description"]),
    values,
)
def test_a_shipped_manifest_with_one_part_replaced_is_read_or_refused(name, key, value):
    table = tomllib.loads(SHIPPED[name].read_text())
    table[key] = value
    parses_or_refuses(table)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_give_a_manifest_or_one_manifest_error(data):
    try:
        loads(data, "fuzz.toml", CATALOG)
    except ManifestError as exc:
        assert "\n" not in str(exc)

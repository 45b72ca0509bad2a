"""Images (image/builder.py, image/imagemain.py, image/runtime.py): built
from a manifest, holding only what it selects, booted by `python IMAGE` and
`malv boot IMAGE` without the source tree, and refused when tampered with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from image.builder import ROOT, build
from image.imagemain import INDEX, ImageRefused, digest, verify

PYTHON = sys.executable


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """The course, default and research images, built once for the module, by name."""
    out = tmp_path_factory.mktemp("images")
    return {name: build(ROOT / "image" / f"{name}.toml", out / f"{name}.pyz") for name in
            ("course", "default", "research")}  # fmt: skip


@pytest.fixture
def cache(tmp_path) -> dict[str, str]:
    """An environment whose per-user cache is a fresh directory."""
    return {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}


def run_image(
    image: Path, *args: str, env=None, cwd=None, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, str(image), *args], capture_output=True, text=True, timeout=timeout,
        env=env, cwd=cwd, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def members(image: Path) -> list[str]:
    with zipfile.ZipFile(image) as archive:
        return archive.namelist()


def rewrite(image: Path, out: Path, change) -> Path:
    """A copy of `image` whose members are `change(dict of name -> bytes)`."""
    with zipfile.ZipFile(image) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in change(files).items():
            archive.writestr(name, data)
    return out


# -- what an image holds ---------------------------------------------------------


def test_the_course_image_holds_no_vgpu_driver_and_no_mlaas_module(images):
    names = members(images["course"])
    assert "kernel/kernel.py" in names and "drivers/console.py" in names
    assert "userland/coreutils.py" in names and "__main__.py" in names
    assert not [n for n in names if n.startswith("drivers/vgpu/")]
    assert [n for n in names if n.startswith("mlaas_modules/")] == ["mlaas_modules/__init__.py"]
    assert "userland/vmguest.py" not in names  # vminfo and balloon are not selected


def test_the_default_image_holds_the_vgpu_engine_and_the_gpu_programs(images):
    names = members(images["default"])
    assert "drivers/vgpu/engine.py" in names and "userland/gpu.py" in names
    table = json.loads(zipfile.ZipFile(images["default"]).read("image.json"))["programs"]
    assert table["gpu-burn"] == "userland.gpu:gpu_burn"
    assert table["vgpu"] == "drivers.vgpu.server:gpu_server"


def test_the_research_image_holds_its_modules(images):
    names = members(images["research"])
    assert {"mlaas_modules/learned_srpt.py", "mlaas_modules/gpu_mig.py"} <= set(names)
    assert "mlaas_modules/rr.py" not in names


def test_the_index_holds_the_sha256_of_every_other_member(images):
    with zipfile.ZipFile(images["course"]) as archive:
        index = json.loads(archive.read(INDEX))["members"]
        assert sorted(index) == sorted(n for n in archive.namelist() if n != INDEX)
        for name, sha256 in index.items():
            assert digest(archive.read(name)) == sha256
    assert verify(str(images["course"]))["members"] == index


def test_one_manifest_and_one_tree_always_build_the_same_bytes(images, tmp_path):
    again = build(ROOT / "image" / "course.toml", tmp_path / "again.pyz")
    assert again.read_bytes() == images["course"].read_bytes()


# -- booting ---------------------------------------------------------------------

NO_NUMBA = "raise ImportError('numba is not installed on this machine')\n"
PROBE = """
import runpy, sys
sys.argv = [IMAGE, "--headless", "--run", "run echo hello from the image; poweroff"]
try:
    runpy.run_path(IMAGE, run_name="__main__")
except SystemExit as exc:
    print("EXIT", exc.code)
import kernel, userland.coreutils
print("KERNEL", kernel.__file__)
print("USERLAND", userland.coreutils.__file__)
print("NUMBA", "numba" in sys.modules)
"""


def test_the_course_image_boots_from_elsewhere_without_numba_or_the_source_tree(
    images, tmp_path, cache
):
    """A virtual environment that sees the installed dependencies (a fresh one
    with only pip installs is test_fresh_venv.py's); the image's own packages
    must come from the image."""
    subprocess.run(
        [PYTHON, "-m", "venv", "--system-site-packages", "--without-pip", tmp_path / "venv"],
        check=True,
    )
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "numba.py").write_text(NO_NUMBA)  # numba cannot be imported
    env = {**cache, "PYTHONPATH": str(tmp_path / "blocked")}
    image = str(images["course"])
    r = subprocess.run(
        [tmp_path / "venv" / "bin" / "python", "-c", f"IMAGE = {image!r}\n" + PROBE],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "hello from the image" in r.stdout
    assert "EXIT 0" in r.stdout
    assert f"KERNEL {image}{os.sep}kernel{os.sep}__init__.py" in r.stdout
    assert f"USERLAND {image}{os.sep}userland{os.sep}coreutils.py" in r.stdout
    assert "NUMBA False" in r.stdout


def test_python_image_boots_it_runs_the_init_script_and_powers_off(images, tmp_path, cache):
    r = run_image(images["course"], "--headless", "--run", "ps; poweroff", env=cache, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("malvos 0.1.0")
    assert "welcome to malvos" in r.stdout  # course.toml's init script
    assert r.stdout.rstrip().endswith("powering off")


def test_malv_boot_image_boots_it_too(images, cache):
    r = subprocess.run(
        [PYTHON, "-m", "image.cli", "boot", str(images["research"]), "--headless", "--run",
         "lsmod; poweroff"],
        capture_output=True, text=True, timeout=300, env=cache, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "learned_srpt" in r.stdout and "learned_warmth" in r.stdout  # preloaded
    assert "live" in r.stdout


def test_a_program_the_image_does_not_hold_is_not_found_elsewhere(images, tmp_path, cache):
    r = run_image(images["course"], "--headless", "--run", "run gpu-burn; poweroff", env=cache)
    assert r.returncode == 1 and "1 command failed: run gpu-burn" in r.stderr, r.stderr
    assert "no program named 'gpu-burn'" in r.stdout  # not found in an installed malvos either


@pytest.mark.slow  # a cold compile of the sharing loop, on purpose
def test_the_default_image_keeps_numba_s_cache_in_the_per_user_cache(images, cache, tmp_path):
    """The first GPU work of a fresh cache compiles the sharing loop (about
    two minutes of CPU), says so on stderr, and caches it per user."""
    argv = ("--headless", "--run", "run gpu-loop 1; poweroff")
    r = run_image(images["default"], *argv, env=cache, timeout=900)
    assert r.returncode == 0, r.stderr
    assert "gpu-loop: kernel 0 done" in r.stdout
    assert "malvos: compiling the GPU sharing loop with numba, once" in r.stderr
    numba_cache = Path(cache["XDG_CACHE_HOME"]) / "malvos" / "numba" / "image" / "drivers" / "vgpu"
    assert sorted(p.name for p in (numba_cache / "sharing").glob("epoch.enter-*.nbi"))


def test_malv_images_lists_each_shipped_manifest_with_a_description():
    r = subprocess.run(
        [PYTHON, "-m", "image.cli", "images"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    lines = r.stdout.splitlines()
    assert {line.split()[0] for line in lines} >= {"default", "course", "research", "vms"}
    assert all(len(line.split()) > 2 for line in lines)


def test_malv_build_refuses_a_bad_manifest_in_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('programs = ["init", "sh", "doom"]\n')
    r = subprocess.run(
        [PYTHON, "-m", "image.cli", "build", str(bad), "-o", str(tmp_path / "bad.pyz")],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0
    assert "bad.toml: programs[2]: no program named 'doom'" in r.stderr
    assert not (tmp_path / "bad.pyz").exists()


# -- tampering -----------------------------------------------------------------------


def changed_byte(files: dict[str, bytes]) -> dict[str, bytes]:
    data = bytearray(files["kernel/sched.py"])
    data[100] ^= 1
    return files | {"kernel/sched.py": bytes(data)}


@pytest.mark.parametrize(
    "change, refusal",
    [
        (changed_byte, "member kernel/sched.py was changed"),
        (lambda f: f | {"userland/evil.py": b"import os\n"}, "member userland/evil.py is not in"),
        (lambda f: {n: d for n, d in f.items() if n != "kernel/tty.py"}, "member kernel/tty.py is missing"),
        (lambda f: f | {INDEX: f[INDEX].replace(b'"kernel/ipc.py": "', b'"kernel/ipc.py": "0')},
         "member kernel/ipc.py was changed"),
        (lambda f: f | {INDEX: b"{}"}, f"member {INDEX} is not a valid index"),
    ],
)  # fmt: skip
def test_a_tampered_image_is_refused_naming_the_member_before_its_code_runs(
    images, tmp_path, cache, change, refusal
):
    tampered = rewrite(images["course"], tmp_path / "tampered.pyz", change)
    r = run_image(tampered, "--headless", "--run", "poweroff", env=cache)
    assert r.returncode == 2
    assert r.stdout == ""  # no banner: nothing of the image ran
    assert r.stderr.startswith(f"malv: refused {tampered}: {refusal}")
    assert r.stderr.count("\n") == 1
    with pytest.raises(ImageRefused, match=refusal):
        verify(str(tampered))


def test_malv_boot_image_takes_the_machine_from_the_manifest_not_from_options(images):
    r = subprocess.run(
        [PYTHON, "-m", "image.cli", "boot", str(images["course"]), "--gpu", "h100", "--headless"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert "are its manifest's" in r.stderr and r.stdout == ""


def test_malv_boot_refuses_a_truncated_image_in_the_host(images, tmp_path):
    truncated = tmp_path / "truncated.pyz"
    truncated.write_bytes(images["course"].read_bytes()[:5000])
    r = subprocess.run(
        [PYTHON, "-m", "image.cli", "boot", str(truncated), "--headless"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr == f"malv: refused {truncated}: not a malvos image (File is not a zip file)\n"


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(position=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_any_flipped_byte_is_refused_naming_a_member_or_not_an_image(
    images, tmp_path, position, bit
):
    data = bytearray(images["course"].read_bytes())
    data[int(position * len(data))] ^= 1 << bit
    flipped = tmp_path / "flipped.pyz"
    flipped.write_bytes(bytes(data))
    with pytest.raises(ImageRefused) as info:
        verify(str(flipped))
    message = str(info.value)
    assert "\n" not in message
    assert " member " in message or "not a malvos image" in message

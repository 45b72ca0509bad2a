"""The image builder behind `malv build`: a manifest in, one zipapp out.

An image holds only what its manifest selects (unikernel-style):

* the kernel package, and image/'s boot side (manifest, runtime, terminal);
* the modules of the selected programs and servers, with the modules they
  import at load time (found by reading their import statements);
* the whole vGPU driver, ``drivers/vgpu/``, only when the manifest has a GPU;
* the selected MLaaS modules;
* ``manifest.toml``, ``image.json`` (the program table and module names:
  an image has no installed metadata to find its programs by) and
  ``__main__.py`` (image/imagemain.py, which verifies before it boots);
* ``MALVOS-INDEX.json``, the sha256 of every other member, and the zip
  comment, the sha256 of all the bytes before it (image/imagemain.py).
"""

from __future__ import annotations

import ast
import json
import tomllib
import zipfile
from importlib import metadata, resources
from pathlib import Path

from image import imagemain
from image.manifest import Catalog, Manifest, load

#: The source tree this builder belongs to.
ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "image"
#: image/'s files that boot an image (not the builder, nor the CLI).
BOOT_FILES = ("image/__init__.py", "image/manifest.py", "image/runtime.py", "image/terminal.py")
PACKAGES = imagemain.SEALED
#: Images that carry the labs (`malv lab`), so that ``python3 course.pyz lab
#: start sched`` works without malvos installed: the course's, and no other.
LAB_IMAGES = ("course",)
LAB_FILES = ("image/labs.py",)


def source_catalog(root: Path = ROOT) -> Catalog:
    """The programs pyproject registers (an installed malvos, which has no
    pyproject.toml, lists them as its entry points), and the modules in
    mlaas_modules/."""
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        with open(pyproject, "rb") as f:
            programs = dict(tomllib.load(f)["project"]["entry-points"]["malvos.programs"])
    else:
        programs = {ep.name: ep.value for ep in metadata.entry_points(group="malvos.programs")}
    modules = {
        p.stem if p.is_file() else p.name
        for p in (root / "mlaas_modules").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    return Catalog(programs, frozenset(modules))


def shipped_manifests() -> list[Path]:
    """The manifests malvos ships: package data of `image`, in a checkout or installed."""
    package = Path(str(resources.files("image")))
    return sorted(package.glob("*.toml"))


def find_manifest(spec: str | Path) -> Path:
    """A manifest's file: `spec` itself, or the shipped manifest of that name
    (``course`` for image/course.toml), when no file `spec` exists."""
    path = Path(spec)
    if path.exists() or path.suffix:
        return path
    shipped = {p.stem: p for p in shipped_manifests()}
    return shipped.get(str(spec), path)


def default_output(manifest_path: str | Path, root: Path = ROOT) -> Path:
    """Where `build` writes the image when no output is named: NAME.pyz."""
    return Path(f"{load(find_manifest(manifest_path), source_catalog(root)).name}.pyz")


def build(manifest_path: str | Path, out: str | Path | None = None, root: Path = ROOT) -> Path:
    """Write the image that the manifest at `manifest_path` (a file, or a
    shipped manifest's name) describes; its path."""
    catalog = source_catalog(root)
    manifest_path = find_manifest(manifest_path)
    manifest = load(manifest_path, catalog)
    out = Path(out) if out is not None else Path(f"{manifest.name}.pyz")
    members = select_files(manifest, catalog, root)
    extra = {
        "__main__.py": (root / "image/imagemain.py").read_bytes(),
        "manifest.toml": Path(manifest_path).read_bytes(),
        "image.json": image_info(manifest, catalog),
    }
    write_image(out, {m: _read(root, m) for m in members} | extra)
    return out


def image_info(manifest: Manifest, catalog: Catalog) -> bytes:
    """What the image knows of itself: its program table and its modules."""
    info = {
        "name": manifest.name,
        "programs": manifest.program_table(catalog),
        "modules": sorted(m.name for m in manifest.modules),
    }
    return json.dumps(info, indent=1, sort_keys=True).encode()


def write_image(out: Path, files: dict[str, bytes]) -> None:
    """A zip of `files` and their index; stored in a stable order, so that one
    manifest and one source tree always make the same bytes."""
    index = {"format": 1, "members": {n: imagemain.digest(files[n]) for n in sorted(files)}}
    files = files | {imagemain.INDEX: json.dumps(index, indent=1).encode()}
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[name])
        archive.comment = b"0" * imagemain.SEAL_BYTES  # the seal's place
    data = tmp.read_bytes()
    tmp.write_bytes(data[: -imagemain.SEAL_BYTES] + imagemain.seal(data))
    tmp.replace(out)


# -- choosing the files ----------------------------------------------------------


def select_files(manifest: Manifest, catalog: Catalog, root: Path = ROOT) -> list[str]:
    """The source files (paths relative to `root`) the image holds."""
    chosen: set[str] = set(BOOT_FILES)
    chosen |= _package_files(root, "kernel")
    if manifest.gpu is not None:
        chosen |= _package_files(root, "drivers/vgpu")
    roots = [_module_file(root, catalog.programs[p].partition(":")[0]) for p in manifest.programs]
    chosen |= _import_closure(root, [r for r in roots if r is not None])
    chosen.add("mlaas_modules/__init__.py")
    for module in manifest.modules:
        chosen |= _mlaas_module_files(root, module.name)
    if manifest.name in LAB_IMAGES:
        chosen |= set(LAB_FILES)
    # The labs are data, not packages: no __init__.py above them.
    labs = _lab_files(root) if manifest.name in LAB_IMAGES else set()
    return sorted(_with_parents(chosen) | labs)


def _lab_files(root: Path) -> set[str]:
    """Every lab's README, starter and grader (image/lab_files/, package data)."""
    labs = root / "image" / "lab_files"
    return {
        p.relative_to(root).as_posix()
        for p in labs.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


#: The ``__init__.py`` an image gives a namespace package: zipimport finds
#: only regular packages.
NAMESPACE_INIT = b'"""A namespace package of the source tree."""\n'


def _read(root: Path, member: str) -> bytes:
    path = root / member
    if not path.is_file() and path.name == "__init__.py":
        return NAMESPACE_INIT
    return path.read_bytes()


def _package_files(root: Path, package: str) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in (root / package).rglob("*.py")
        if "__pycache__" not in p.parts
    }


def _mlaas_module_files(root: Path, name: str) -> set[str]:
    single = root / "mlaas_modules" / f"{name}.py"
    if single.is_file():
        return {f"mlaas_modules/{name}.py"}
    return _package_files(root, f"mlaas_modules/{name}")


def _module_file(root: Path, module: str) -> str | None:
    """The file of a dotted module name of ours, if there is one."""
    if module.partition(".")[0] not in PACKAGES:
        return None
    base = module.replace(".", "/")
    for candidate in (f"{base}.py", f"{base}/__init__.py"):
        if (root / candidate).is_file():
            return candidate
    return None


def _import_closure(root: Path, start: list[str]) -> set[str]:
    """`start` and every module of ours they import at load time, transitively.
    Imports inside functions are not followed: they run only when used (the
    shell's GPU commands import the driver only on a GPU machine)."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _load_time_imports((root / path).read_text()):
            found = _module_file(root, module)
            if found is not None:
                todo.append(found)
    return seen


def _load_time_imports(source: str) -> list[str]:
    """Module names imported by statements outside functions and classes."""
    names: list[str] = []
    todo = list(ast.parse(source).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]  # a submodule, maybe
        elif isinstance(node, ast.If | ast.Try):
            todo += node.body + node.orelse + getattr(node, "finalbody", [])
            todo += [s for h in getattr(node, "handlers", []) for s in h.body]
    return names


def _with_parents(files: set[str]) -> set[str]:
    """`files` and the ``__init__.py`` of every package above them."""
    full = set(files)
    for name in files:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            full.add("/".join(parts[:i]) + "/__init__.py")
    return full

"""Booting from inside an image: the boot loader that image/imagemain.py
hands a verified, sealed image to.

It reads the image's own manifest and program table (image.json), registers
the programs (the image has no installed metadata), points numba's cache at a
per-user directory (a cache cannot live inside a zip), writes the MLaaS
modules out where the module loader reads files, and boots: the kernel, its
preloaded modules, its guest VMs, then the init script and any ``--run``
commands on the console.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import math
import os
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs

from image.manifest import Catalog, Manifest, loads
from kernel import Kernel, KernelConfig, KernelHalted
from kernel.log import FORMATS
from kernel.programs import DEFAULT_PROGRAMS


def cache_dir() -> Path:
    """Where images keep what cannot live in a zip: $XDG_CACHE_HOME/malvos,
    by default ~/.cache/malvos."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "malvos"


#: Optional packages a command may need: (what for, how to install it).
OPTIONAL = {
    "prompt_toolkit": ("the interactive terminal", "pip install prompt_toolkit"),
    "numba": ("the vGPU", "pip install numba"),
    "ray": ("--ray", "pip install -e '.[ray]'"),
    "mlperf_loadgen": ("malv serve", "pip install mlcommons-loadgen"),
}


def missing_dependency(exc: ModuleNotFoundError) -> str | None:
    """One line naming an optional package that is not installed and how to
    install it; None for any other missing module (a bug, not a setup)."""
    name = (exc.name or "").partition(".")[0]
    if name not in OPTIONAL:
        return None
    needed_by, install = OPTIONAL[name]
    return f"{needed_by} needs {name}, which is not installed: {install}"


def main(image: str, argv: list[str]) -> int:
    try:
        return _main(image, argv)
    except ModuleNotFoundError as exc:
        hint = missing_dependency(exc)
        if hint is None:
            raise
        print(f"malvos: {hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("malvos: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # the option parser's verdict
        return exc.code if isinstance(exc.code, int) else 2


def _main(image: str, argv: list[str]) -> int:
    started = time.monotonic()
    parser = _parser()
    args = parser.parse_args(argv)
    # (exp.output's option types are not in an image: the same limits, here)
    if args.seed is not None and args.seed < 0:
        parser.error(f"argument --seed: a seed must be 0 or more, got {args.seed}")
    if args.timeout is not None and not (args.timeout > 0 and math.isfinite(args.timeout)):
        parser.error(f"argument --timeout: must be a positive finite number, got {args.timeout}")
    with zipfile.ZipFile(image) as archive:
        info = json.loads(archive.read("image.json"))
        text = archive.read("manifest.toml")
        index = archive.read("MALVOS-INDEX.json")
    catalog = Catalog(info["programs"], frozenset(info["modules"]))
    manifest = loads(text, f"{image}:manifest.toml", catalog)
    DEFAULT_PROGRAMS.use_only(info["programs"])
    if manifest.gpu is not None:
        use_numba_cache(image, json.loads(index)["members"])
    module_dir = write_modules(image, info["modules"], hashlib.sha256(index).hexdigest()[:16])
    headless = args.headless or args.run is not None
    config = attrs.evolve(
        manifest.config,
        seed=manifest.config.seed if args.seed is None else args.seed,
        log_format=args.log_format,
        headless=headless,
        realtime=not headless,
    )
    script = [*manifest.init, *commands(args.run or "", args.strict)]
    deadline = None if args.timeout is None else started + args.timeout
    return boot(manifest, config, module_dir, script, headless, deadline)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="malvos image", description="boot this malvos image")
    parser.add_argument("--headless", action="store_true", help="run --run and power off")
    parser.add_argument("--run", metavar="CMDS", help='shell commands to run, separated by ";"')
    parser.add_argument("--seed", type=int, help="the seed (default: the manifest's)")
    parser.add_argument("--log-format", choices=FORMATS, default="console")
    add_headless_options(parser)
    return parser


def add_headless_options(parser: argparse.ArgumentParser, seconds=float) -> None:
    """--timeout and --strict, for `malv boot` and an image's own command line
    (`seconds`: --timeout's option type)."""
    parser.add_argument(
        "--timeout",
        type=seconds,
        metavar="S",
        help="headless: give up after S seconds of wall-clock time (exit 124)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="headless: stop at the first failed command, like sh's set -e (exit 1)",
    )


def commands(script: str, strict: bool = False) -> list[str]:
    """The `;`-separated commands of --run; `set -e` first when `strict`."""
    return ["set -e"] * strict + [c.strip() for c in script.split(";") if c.strip()]


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# -- booting ---------------------------------------------------------------------


def boot(
    manifest: Manifest,
    config: KernelConfig,
    module_dir: Path,
    script,
    headless,
    deadline: float | None = None,
) -> int:
    k = Kernel(config, console=_write)
    k.mlaas.module_path = [str(module_dir)]
    if not headless:
        if not sys.stdin.isatty():
            print(
                'malvos: standard input is not a terminal; use --headless --run "cmd; cmd"',
                file=sys.stderr,
            )
            return 2
        import image.terminal  # noqa: F401 - a missing prompt_toolkit is said before booting

        k.threaded = True
    try:
        k.boot()
        for module in manifest.modules:
            if module.load:
                k.mlaas.insmod(module.name, module.params)
        start_vms(k, manifest, wait=headless)
        for command in script:
            k.tty.feed(command)
        return run_headless(k, deadline) if headless else _run_interactive(k)
    finally:
        k.machine.shutdown()


def start_vms(host: Kernel, manifest: Manifest, wait: bool) -> None:
    if not manifest.vms:
        return
    from kernel.hypervisor import Hypervisor

    hv = Hypervisor(host)
    for i, vm in enumerate(manifest.vms, start=1):
        config = KernelConfig(seed=host.seed + i, cpus=vm.cpus, frames=vm.frames, gpu=None)
        guest = hv.create(
            vm.name, config, allowed_modules=vm.allowed_modules, gpu_share=vm.gpu_share
        )
        guest.start(wait=wait)


def run_headless(k: Kernel, deadline: float | None = None, prog: str = "malvos") -> int:
    """Close the console (init powers off at the end of input) and run until
    the kernel halts, or until `deadline` (time.monotonic()) has passed.

    0 on poweroff when no command failed; 1, with one line, when some did
    (the shell's "commands failed" summary) or the kernel stopped otherwise;
    124, as timeout(1) does, when the deadline passed first."""
    k.tty.close()
    expired = threading.Event()
    with _stopped_at(k.machine.loop, deadline, expired):
        try:
            k.machine.run()
        except KernelHalted:
            pass
    if not k.halted and expired.is_set():
        print(f"{prog}: timed out (--timeout); the commands had not finished", file=sys.stderr)
        return 124
    if not k.halted:
        print(f"{prog}: the kernel stopped with nothing left to run", file=sys.stderr)
        return 1
    if not k.halt_reason.startswith("poweroff"):
        print(f"{prog}: the kernel halted: {k.halt_reason}", file=sys.stderr)
        return 1
    summaries = k.log.find("commands failed")
    if summaries:
        last = summaries[-1]
        if last.get("stopped"):
            print(f"{prog}: stopped at a failed command (--strict): {last['commands']}",
                  file=sys.stderr)  # fmt: skip
        else:
            count = last["count"]
            print(f"{prog}: {count} command{'s' * (count != 1)} failed: {last['commands']}",
                  file=sys.stderr)  # fmt: skip
        return 1
    return 0


@contextmanager
def _stopped_at(loop, deadline: float | None, expired: threading.Event) -> Iterator[None]:
    """Stop `loop` once the wall clock passes `deadline`, from a thread of
    its own (a max-speed loop never looks at the clock), until the block ends."""
    if deadline is None:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        if done.wait(max(0.0, deadline - time.monotonic())):
            return
        expired.set()
        while True:  # until the loop has seen it: run() clears a stop made before it began
            loop.stop()
            if done.wait(0.05):
                return

    threading.Thread(target=watch, name="malvos-timeout", daemon=True).start()
    try:
        yield
    finally:
        done.set()


def _run_interactive(k: Kernel) -> int:
    from image.terminal import run_interactive

    return run_interactive(k)


# -- what cannot live in a zip -------------------------------------------------------


def write_modules(image: str, names: list[str], key: str) -> Path:
    """The image's MLaaS modules, written to the per-user cache (the module
    loader reads and hashes files); rewritten at every boot, from the
    verified image, so an edit there does not last."""
    target = cache_dir() / "modules" / key
    prefix = "mlaas_modules/"
    with zipfile.ZipFile(image) as archive:
        for member in archive.namelist():
            if member.startswith(prefix) and member != prefix + "__init__.py":
                path = target / member[len(prefix) :]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(archive.read(member))
    target.mkdir(parents=True, exist_ok=True)
    return target


def use_numba_cache(image: str, members: dict[str, str]) -> None:
    """Keep numba's compiled code in NUMBA_CACHE_DIR (by default the per-user
    cache's numba/), keyed by each source member's sha256: a second boot, or
    an image rebuilt from the same source, does not compile again."""
    os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_dir() / "numba"))
    from numba.core import caching

    caching.CacheImpl._locator_classes.insert(0, _image_locator(caching, image, members))


def _unit_members(members: dict[str, str]) -> set[str]:
    """The image's members of the compiled loop's unit (drivers/vgpu/numba_cache.py)."""
    from drivers.vgpu.numba_cache import UNIT_PATTERNS

    patterns = [f"drivers/vgpu/{pattern}" for pattern in UNIT_PATTERNS]
    return {m for m in members if any(fnmatch.fnmatchcase(m, p) for p in patterns)}


def _image_locator(caching, image: str, members: dict[str, str]):
    prefix = image.rstrip(os.sep) + os.sep
    # numba compiles the engine, the loop and every policy into the loop's
    # entry points: each member of that unit is stamped with all of them.
    unit = _unit_members(members)
    unit_stamp = hashlib.sha256(
        "\n".join(f"{m} {members[m]}" for m in sorted(unit)).encode()
    ).hexdigest()

    class ImageCacheLocator(caching._CacheLocator):
        """numba's cache for functions whose source is a member of this image."""

        def __init__(self, py_func, py_file: str) -> None:
            self._member = py_file[len(prefix) :].replace(os.sep, "/")
            self._lineno = py_func.__code__.co_firstlineno
            root = os.environ["NUMBA_CACHE_DIR"]
            self._cache_path = os.path.join(root, "image", os.path.dirname(self._member))

        def get_cache_path(self) -> str:
            return self._cache_path

        def get_source_stamp(self) -> str:
            if self._member in unit:  # compiled with the rest of the unit
                return f"{members[self._member]} {unit_stamp}"
            return members[self._member]

        def get_disambiguator(self) -> str:
            return str(self._lineno)

        @classmethod
        def from_function(cls, py_func, py_file: str):
            if not py_file.startswith(prefix):
                return None
            locator = cls(py_func, py_file)
            try:
                locator.ensure_cache_path()
            except OSError:
                return None
            return locator

    return ImageCacheLocator

"""The `malv` command line.  It calls the same Python API a test or a
researcher would (`kernel.boot`, `bench.*.run`)."""

from __future__ import annotations

import argparse
import importlib
import inspect
import signal
import sys
import time

from exp.loadgen.cli import add_serve_command
from exp.output import OneLineParser, integer, nonnegative_int, positive_float, seed
from image.runtime import add_headless_options, commands, missing_dependency, run_headless
from kernel import Kernel, KernelConfig
from kernel.log import FORMATS

BENCHMARKS = ("ipc", "boot", "vgpu", "mlaas", "sim", "vm", "serve", "serve-memory")
#: Experiments, each a module exp/NAME.py with main(argv); add yours here.
EXPERIMENTS = (
    "memory",
    "sched",
    "crossover",
    "stacking",
    "hybrid",
    "rightsizing",
    "dvfs",
    "vms",
    "sweep",
)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def cmd_boot(args: argparse.Namespace) -> int:
    if (args.timeout is not None or args.strict) and not (args.headless or args.run is not None):
        print(
            "malv boot: --timeout and --strict are for headless boots (--headless)", file=sys.stderr
        )
        return 2
    if args.image is not None:
        return boot_image(args)
    config = KernelConfig(
        seed=0 if args.seed is None else args.seed,
        cpus=args.cpus,
        frames=args.frames,
        log_format=args.log_format,
        gpu=None if args.gpu == "none" else args.gpu,
        headless=args.headless or args.run is not None,
    )
    if config.headless:
        return boot_headless(
            args.run or "", config, vms=args.vms, timeout_s=args.timeout, strict=args.strict
        )
    if not sys.stdin.isatty():
        print(
            'malv boot: standard input is not a terminal; use --headless --run "cmd; cmd"',
            file=sys.stderr,
        )
        return 2
    from image.terminal import run_interactive  # needs prompt_toolkit: see main

    k = Kernel(config, console=_write)  # not headless: realtime
    k.threaded = True
    k.boot()
    start_guests(k, args.vms, wait=False)  # they boot once the loop runs
    try:
        return run_interactive(k)
    finally:
        k.shutdown()


def start_guests(host: Kernel, vms: int, wait: bool = True) -> None:
    """Give the host a hypervisor and `vms` guests, vm1..vmN, started (with
    `wait`, booted to their prompts), each with an even share of the host's
    vGPU when it has one."""
    if vms:
        from kernel.hypervisor import Hypervisor

        hv = Hypervisor(host)
        # With a vGPU on the host, the guests share it evenly.
        share = max(1, 100 // vms) if "gpu" in host.servers else 0
        for i in range(1, vms + 1):
            hv.create(f"vm{i}", gpu_share=share).start(wait=wait)


def boot_headless(
    script: str,
    config: KernelConfig,
    vms: int = 0,
    timeout_s: float | None = None,
    strict: bool = False,
) -> int:
    """Boot at max speed (with `vms` guests started), type each
    `;`-separated command, then close the console; init powers off at the
    end of input, and the guests go down with the host.  Exits 0 on poweroff
    when no command failed (image/runtime.py's `run_headless`: `timeout_s`
    of wall-clock time from here, and `strict`)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    k = Kernel(config, console=_write)
    try:
        k.boot()
        start_guests(k, vms)
        for command in commands(script, strict):
            k.tty.feed(command)
        return run_headless(k, deadline=deadline, prog="malv boot")
    finally:
        k.machine.shutdown()


def boot_image(args: argparse.Namespace) -> int:
    """`malv boot IMAGE`: verify the image here, before any of its code runs,
    then boot it in a fresh interpreter, as `python IMAGE` would (this
    process has the source tree's kernel imported already)."""
    import subprocess

    from image.imagemain import ImageRefused, verify

    machine = (args.cpus, args.frames, args.gpu, args.vms)
    if machine != (2, 2048, "a100", 0):
        raise ValueError(
            "an image's cpus, frames, gpu and vms are its manifest's; drop those options"
        )
    try:
        verify(args.image)
    except ImageRefused as exc:
        print(f"malv: refused {exc}", file=sys.stderr)
        return 2
    argv = ["--log-format", args.log_format]
    argv += ["--seed", str(args.seed)] if args.seed is not None else []
    argv += ["--headless"] * args.headless + (["--run", args.run] if args.run is not None else [])
    argv += ["--timeout", repr(args.timeout)] if args.timeout is not None else []
    argv += ["--strict"] * args.strict
    child = subprocess.Popen([sys.executable, args.image, *argv])
    # Ctrl-C reaches the image too (one process group): it says the one line.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell says


def cmd_build(args: argparse.Namespace) -> int:
    from image.builder import build, default_output
    from image.manifest import ManifestError

    target = args.output
    try:
        if target is None:
            target = str(default_output(args.manifest))
        check_image_target(target, args.force)
        out = build(args.manifest, target)
    except (ManifestError, TargetRefused) as exc:
        print(f"malv build: {exc}", file=sys.stderr)
        return 2
    except BaseException:  # Ctrl-C, a full disk: no half-written image is left
        if target is not None:
            _remove_partial(target)
        raise
    print(f"{out}: {out.stat().st_size} bytes")
    return 0


class TargetRefused(Exception):
    """`malv build` would destroy something at its output path (-o's, or the
    default NAME.pyz), or cannot write there."""


def check_image_target(path: str, force: bool) -> None:
    """Refuse an -o that is a directory, cannot be written, or holds a file
    other than a malvos image (unless `force`): an image is a zip with a
    manifest and the builder's index."""
    import os
    import tempfile
    import zipfile

    from image.imagemain import INDEX

    if os.path.isdir(path):
        raise TargetRefused(f"{path} is a directory; name the image file, e.g. {path}/NAME.pyz")
    if os.path.lexists(path) and not force:
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (OSError, zipfile.BadZipFile):
            names = set()
        if not {"manifest.toml", INDEX} <= names:
            raise TargetRefused(
                f"{path} exists and is not a malvos image; not overwriting it (--force does)"
            )
    parent = os.path.dirname(os.path.abspath(path))
    try:  # the builder writes PATH.tmp beside it, then renames it
        fd, probe = tempfile.mkstemp(prefix=".malv-probe.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise TargetRefused(
            f"cannot write {path}: no file can be made in {parent} ({exc.strerror})"
        ) from None


def _remove_partial(path: str) -> None:
    """The builder's PATH.tmp, from a build that did not finish."""
    import contextlib
    import os

    with contextlib.suppress(OSError):
        os.unlink(f"{path}.tmp")


def cmd_images(args: argparse.Namespace) -> int:
    from image.builder import shipped_manifests, source_catalog
    from image.manifest import load

    catalog = source_catalog()
    for path in shipped_manifests():
        print(f"{path.stem:<10} {load(path, catalog).description}")
    return 0


def add_image_commands(sub) -> None:
    """`malv build` and `malv images` (image/builder.py)."""
    build = sub.add_parser("build", help="build a single-file image from a manifest")
    build.add_argument("manifest", help="an image manifest, e.g. image/course.toml")
    build.add_argument("-o", "--output", help="the image file (default: NAME.pyz)")
    build.add_argument(
        "--force",
        action="store_true",
        help="overwrite the image file even if what is there is not an image",
    )
    build.set_defaults(func=cmd_build)
    images = sub.add_parser("images", help="list the shipped image manifests")
    images.set_defaults(func=cmd_images)


def cmd_bench(args: argparse.Namespace) -> int:
    names = BENCHMARKS if args.name in (None, "all") else (args.name,)
    for name in names:
        if name not in BENCHMARKS:
            print(
                f"malv bench: unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}",
                file=sys.stderr,
            )
            return 2
    modules = [importlib.import_module(f"bench.{name.replace('-', '_')}") for name in names]
    timed = {"seconds": args.duration} if args.duration is not None else {}
    for name, module in zip(names, modules, strict=True):
        if timed and "seconds" not in inspect.signature(module.run).parameters:
            print(f"malv bench: {name} runs for no set time (--duration)", file=sys.stderr)
            return 2
    for name, module in zip(names, modules, strict=True):
        if not args.json:
            print(f"== {name}", flush=True)
        for figure in module.run(quick=args.quick, **timed):
            print(figure.json() if args.json else figure.line(), flush=True)
    return 0


def cmd_exp(args: argparse.Namespace) -> int:
    if args.name not in EXPERIMENTS:
        print(
            f"malv exp: unknown experiment {args.name!r}; choose from {', '.join(EXPERIMENTS)}",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(f"exp.{args.name}")
    try:
        return module.main(args.args)
    except KeyboardInterrupt:
        fresh_line = "\n" if sys.stderr.isatty() else ""  # after a progress bar's \r
        # An experiment that keeps work across runs (a sweep) says what it kept.
        kept = getattr(module, "INTERRUPTED", "nothing was written")
        print(f"{fresh_line}malv exp {args.name}: interrupted; {kept}", file=sys.stderr)
        return 130


def cmd_lab(args: argparse.Namespace) -> int:
    from image import labs

    return labs.main(args.action, args.name, args.dir)


def cmd_compile(args: argparse.Namespace) -> int:
    from drivers.vgpu import warm

    for part, seconds in warm.compile_everything().items():
        print(f"{part}: ready ({seconds:.1f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="malv", description="malvos: boot, benchmark and experiment")
    sub = parser.add_subparsers(dest="command", required=True)

    boot = sub.add_parser("boot", help="boot the kernel (interactive in a terminal, or headless)")
    boot.add_argument(
        "image", nargs="?", help="an image built by malv build (default: the default manifest)"
    )
    boot.add_argument(
        "--headless", action="store_true", help="no person present: run --run and power off"
    )
    boot.add_argument("--run", metavar="CMDS", help='shell commands to run, separated by ";"')
    boot.add_argument(
        "--seed", type=seed, help="seed for every random choice (default 0, or an image's own)"
    )
    boot.add_argument("--cpus", type=integer, default=2, help="virtual CPUs (default 2)")
    boot.add_argument(
        "--frames",
        type=integer,
        default=2048,
        help="physical memory in 4 KiB frames (default 2048)",
    )
    boot.add_argument(
        "--gpu",
        choices=("a100", "h100", "v100", "none"),
        default="a100",
        help="the vGPU preset (default a100)",
    )
    boot.add_argument("--log-format", choices=FORMATS, default="console", help="kernel log format")
    boot.add_argument(
        "--vms",
        type=nonnegative_int,
        default=0,
        help="guest VMs to start on the host, vm1..vmN (default 0)",
    )
    add_headless_options(boot, seconds=positive_float)
    boot.set_defaults(func=cmd_boot)

    add_image_commands(sub)

    bench = sub.add_parser("bench", help="run performance benchmarks (ratios in one run)")
    bench.add_argument("name", nargs="?", help=f"one of {', '.join(BENCHMARKS)} (default: all)")
    bench.add_argument("--json", action="store_true", help="one JSON object per figure")
    bench.add_argument("--quick", action="store_true", help="shorter runs, noisier figures")
    bench.add_argument(
        "--duration",
        type=positive_float,
        metavar="SECONDS",
        help="how long a benchmark that runs for a set time runs (sim: simulated seconds "
        "per run; serve-memory: seconds of serving, default 600, --quick 20)",
    )
    bench.set_defaults(func=cmd_bench)

    exp = sub.add_parser(
        "exp", help="run an experiment: results.json, results.md and plots under --out"
    )
    exp.add_argument("name", help=f"one of {', '.join(EXPERIMENTS)}")
    exp.add_argument(
        "args",
        nargs=argparse.REMAINDER,
        help="the experiment's options (--out DIR, --quick, --seed N)",
    )
    exp.set_defaults(func=cmd_exp)

    add_serve_command(sub)

    compile_ = sub.add_parser(
        "compile",
        help="compile the vGPU's numba code ahead of time (about two minutes, once; "
        "later runs load it from numba's cache)",
    )
    compile_.set_defaults(func=cmd_compile)

    lab = sub.add_parser(
        "lab", help="graded labs for OS courses: list, start NAME, grade NAME [DIR]"
    )
    lab.add_argument("action", nargs="?", help="list, start or grade")
    lab.add_argument("name", nargs="?", help="the lab (see malv lab list)")
    lab.add_argument("dir", nargs="?", help="grade: the directory or file graded (default .)")
    lab.set_defaults(func=cmd_lab)

    # Listed here for --help; main hands `malv busy ...` to bench.busy whole,
    # since the options after `--` belong to the command it runs.
    sub.add_parser(
        "busy",
        add_help=False,
        help="run a command on a loaded host: CPU burners, and its process group "
        "stopped for part of every period (see malv busy --help)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["busy"]:
            from bench import busy

            return busy.main(argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except ModuleNotFoundError as exc:
        hint = missing_dependency(exc)
        if hint is None:
            raise
        print(f"malv: {hint}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        print(f"malv: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # an option parser's verdict: 2 for bad input, 0 for --help
        return exc.code if isinstance(exc.code, int) else 2
    except KeyboardInterrupt:  # Ctrl-C: one line, and a shell's 128 + SIGINT
        fresh_line = "\n" if sys.stderr.isatty() else ""  # after a progress bar's \r
        command = " ".join(argv[:1])
        print(f"{fresh_line}malv{' ' if command else ''}{command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

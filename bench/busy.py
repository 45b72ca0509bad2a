"""`malv busy`: run a command on a host that looks very busy.

    malv busy [--burners N] [--stop-ms 60] [--period-ms 100] -- CMD [ARGS...]

It starts N processes that only burn CPU, runs CMD in a process group of its
own, and freezes that whole group (SIGSTOP) for stop-ms of every period-ms,
letting it go on (SIGCONT) for the rest, until CMD exits.  To the command
this looks like a host that is overloaded and preempts it for long stretches:
the worst case for anything that reads the host's clock.  A seeded run must
give the same results under it as on an idle host (tests/test_determinism.py).

It exits with CMD's status (128 + the signal's number if a signal ended it),
always stops its burners and never leaves the group stopped, on Ctrl-C and on
error too.  At the end it prints one line on stderr: the share of CMD's wall
time it was stopped (the duty cycle achieved) and that wall time.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from exp.output import OneLineParser

#: A burner spins until it is stopped or orphaned, so a busy killed with
#: SIGKILL leaves nothing spinning behind.
BURNER = "import os, sys\nparent = int(sys.argv[1])\nwhile os.getppid() == parent:\n    pass\n"

#: How long an interrupted command gets to exit on its own before it is killed.
GRACE_S = 5.0


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineParser(
        prog="malv busy",
        description="run CMD while CPU burners load the host and its process group is "
        "stopped for stop-ms of every period-ms",
    )
    p.add_argument("--burners", type=int, default=8, help="CPU-burning processes (default 8)")
    p.add_argument("--stop-ms", type=float, default=60.0, help="stopped per period (default 60)")
    p.add_argument("--period-ms", type=float, default=100.0, help="period (default 100)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    args = p.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        p.error("no command given (malv busy [options] -- CMD [ARGS...])")
    if args.burners < 0:
        p.error("--burners must be 0 or more")
    if not 0 <= args.stop_ms < args.period_ms:
        p.error("--stop-ms must be at least 0 and less than --period-ms")
    return args


def start_burners(n: int) -> list[subprocess.Popen]:
    # A session of their own: Ctrl-C on the terminal is busy's to handle, not theirs.
    return [
        subprocess.Popen([sys.executable, "-c", BURNER, str(os.getpid())], start_new_session=True)
        for _ in range(n)
    ]


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:  # the group has emptied
        pass


def stop_and_go(child: subprocess.Popen, stop_s: float, go_s: float, asked: list[int]) -> float:
    """Alternate SIGSTOP and SIGCONT on the child's group until the child exits
    or a signal asks busy to stop (`asked`); return the seconds it spent stopped."""
    stopped_s = 0.0
    while child.poll() is None and not asked:
        t0 = time.monotonic()
        signal_group(child.pid, signal.SIGSTOP)
        time.sleep(stop_s)
        signal_group(child.pid, signal.SIGCONT)
        stopped_s += time.monotonic() - t0
        deadline = time.monotonic() + go_s
        while child.poll() is None and not asked and time.monotonic() < deadline:
            time.sleep(min(0.005, go_s))
    return stopped_s


def end(child: subprocess.Popen, sig: int) -> None:
    """Ask a still-running child to stop with `sig`, then kill it after GRACE_S."""
    if child.poll() is not None:
        return
    signal_group(child.pid, sig)
    try:
        child.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        signal_group(child.pid, signal.SIGKILL)
        child.wait()


def exit_status(returncode: int) -> int:
    """A shell's way: 128 + the signal's number when a signal ended the command."""
    return 128 - returncode if returncode < 0 else returncode


def run(args: argparse.Namespace) -> int:
    # Ctrl-C and SIGTERM only set a flag: an exception raised at any point (inside
    # Popen's own bookkeeping, say) could leave the command stopped or unreaped.
    asked: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, frame: asked.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    burners = start_burners(args.burners)
    child = None
    try:
        t0 = time.monotonic()
        child = subprocess.Popen(args.command, process_group=0)
        stop_s, go_s = args.stop_ms / 1e3, (args.period_ms - args.stop_ms) / 1e3
        stopped_s = stop_and_go(child, stop_s, go_s, asked)
        wall_s = time.monotonic() - t0
    finally:
        if child is not None:
            signal_group(child.pid, signal.SIGCONT)
            end(child, asked[0] if asked else signal.SIGTERM)
        for burner in burners:
            burner.kill()
            burner.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if asked:
        return 128 + asked[0]
    stopped = stopped_s / max(wall_s, 1e-9)
    print(
        f"malv busy: {args.burners} burners; command stopped {100 * stopped:.0f}% of its wall "
        f"time (asked {100 * args.stop_ms / args.period_ms:.0f}%); command wall time {wall_s:.2f} s",
        file=sys.stderr,
    )
    return exit_status(child.returncode)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        return run(args)
    except FileNotFoundError as exc:
        print(f"malv busy: {exc}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())

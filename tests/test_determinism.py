"""A seeded run gives the same results, byte for byte, on an idle host and on a very busy one.

Each experiment runs twice through `malv exp`: once as it is, and once under
`malv busy`, which loads the host with CPU burners and freezes the
experiments' process group for 60 ms of every 100 ms.  Everything it writes
but timing.json (the host's own clock readings) must come out identical:
results.json, results.md, the plots and the trace.  A module time budget
measured on the host's clock, or a wall-clock figure in the results, fails
this.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.busy import BURNER

BUSY = [sys.executable, "-m", "bench.busy"]
LOADED = [*BUSY, "--burners", "4", "--stop-ms", "60", "--period-ms", "100", "--"]

#: Short seeded runs whose advisors run on time budgets: memory modules
#: (on_access, select_victim), sched modules (select_next, time slices) and
#: the gpu_lithos module that a GPU-sharing run follows (with a trace).
EXPERIMENTS = {
    "memory": ["memory", "--quick", "--accesses", "2000", "--frames", "32"],
    "sched": ["sched", "--quick", "--jobs", "100"],
    "stacking": ["stacking", "--quick", "--duration", "0.04", "--policies", "lithos",
                 "--jobs", "1"],
}  # fmt: skip

#: The one file an experiment writes from the host's clock.
HOST_TIMED = "timing.json"

#: `malv exp ARGS` for each experiment in turn, in one process (the start-up
#: is paid once), each one's stderr to its own file; one failing goes on to
#: the next.
EXPERIMENTS_IN_TURN = """
import sys, traceback
from contextlib import redirect_stderr
from image.cli import main
failed = False
for argv, log in {runs!r}:
    with open(log, "w") as f, redirect_stderr(f):
        try:
            failed |= main(["exp", *argv]) != 0
        except Exception:
            traceback.print_exc()
            failed = True
sys.exit(failed)
"""


def run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL
    )


def run_experiments(out: Path, prefix: list[str]) -> str:
    """Run every experiment into out/NAME, its stderr into out/NAME.stderr
    (under `prefix`); return what the process itself said on stderr."""
    runs = [([*argv, "--quiet", "--out", str(out / name)], str(out / f"{name}.stderr"))
            for name, argv in EXPERIMENTS.items()]  # fmt: skip
    return run([*prefix, sys.executable, "-c", EXPERIMENTS_IN_TURN.format(runs=runs)]).stderr


@pytest.fixture(scope="module")
def hosts(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Every experiment's outputs from an idle host and from a busy one: the
    directory of each host's runs, and what the runs' process said on stderr."""
    out = {}
    for host, prefix in (("idle", []), ("busy", LOADED)):
        directory = tmp_path_factory.mktemp(host)
        out[host] = (directory, run_experiments(directory, prefix))
    return out


def written(hosts: dict, host: str, name: str) -> dict[str, bytes]:
    """Every file `malv exp NAME` wrote on `host`, by name."""
    directory, stderr = hosts[host]
    out = directory / name
    log = directory / f"{name}.stderr"
    said = log.read_text()[-4000:] if log.exists() else ""
    assert out.is_dir(), f"malv exp {name} failed on the {host} host:\n{said}\n{stderr[-1000:]}"
    return {p.name: p.read_bytes() for p in out.iterdir()}


@pytest.mark.slow  # three experiments, twice, once beside CPU burners
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_seeded_results_are_the_same_on_an_idle_and_a_very_busy_host(name, hosts):
    idle, busy = written(hosts, "idle", name), written(hosts, "busy", name)
    assert {"results.json", "results.md"} <= set(idle)
    assert set(idle) == set(busy)
    for file in sorted(set(idle) - {HOST_TIMED}):
        assert idle[file] == busy[file], f"{file} differs between an idle and a busy host"


# -- the busy tool itself ---------------------------------------------------------


def test_busy_stops_the_command_for_stop_ms_again_and_again():
    # The command watches the clock for a second; each time its group was
    # stopped it sees the clock jump by at least --stop-ms.
    watch = (
        "import time\n"
        "start = last = time.monotonic()\n"
        "jumps = 0\n"
        "while last - start < 1.0:\n"
        "    time.sleep(0.002)\n"
        "    now = time.monotonic()\n"
        "    jumps += now - last >= 0.07\n"
        "    last = now\n"
        "print(jumps)\n"
    )
    r = run([*BUSY, "--burners", "0", "--stop-ms", "80", "--period-ms", "100", "--",
             sys.executable, "-c", watch])  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) >= 3  # about 10 when every period is kept
    assert "malv busy: 0 burners; command stopped" in r.stderr


def is_burner(pid: int, busy_pid: int) -> bool:
    """Whether process `pid` runs the burner loop for `busy_pid`."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:  # gone
        return False
    return BURNER.encode() in cmdline and str(busy_pid).encode() in cmdline


def burners_of(busy_pid: int) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and is_burner(int(p.name), busy_pid)]  # fmt: skip


def test_busy_exits_with_the_commands_status_and_leaves_no_burner_behind():
    # The command lists its siblings, busy's burners, then exits with status 3.
    report = (
        "import os, sys\n"
        "def parent(pid):\n"
        "    try:\n"
        "        return int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1])\n"
        "    except OSError:\n"
        "        return None\n"
        "busy = os.getppid()\n"
        "print(busy, *[p for p in os.listdir('/proc') if p.isdigit()\n"
        "              and int(p) != os.getpid() and parent(p) == busy])\n"
        "sys.exit(3)\n"
    )
    r = run([*BUSY, "--burners", "2", "--", sys.executable, "-c", report])
    assert r.returncode == 3, r.stderr
    busy_pid, *burners = map(int, r.stdout.split())
    assert len(burners) == 2
    assert not [pid for pid in burners if is_burner(pid, busy_pid)]


def test_ctrl_c_ends_the_command_and_never_leaves_it_stopped():
    waiter = "import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(120)\n"
    busy = subprocess.Popen(
        [*BUSY, "--burners", "1", "--", sys.executable, "-c", waiter],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        child = int(busy.stdout.readline())
        busy.send_signal(signal.SIGINT)
        assert busy.wait(timeout=60) == 130
    finally:
        busy.kill()
        busy.wait()
    # busy reaped the command: it ended, rather than being left stopped.
    assert not os.path.exists(f"/proc/{child}")
    assert burners_of(busy.pid) == []

"""The `malv` command line, run as a user would."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from bench.report import Figure
from image.cli import main


def malv(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "image.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_headless_run_prints_init_shell_and_memory_and_exits_0():
    r = malv("boot", "--headless", "--run", "ps; free; poweroff")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("malvos 0.1.0")
    assert re.search(r"^\$ ps$", out, re.M)
    assert re.search(r"^\s+3\s+0\s+\w+\s+[\d.]+\s+\d+\s+init$", out, re.M)
    assert re.search(r"^\s+4\s+3\s+\w+\s+[\d.]+\s+\d+\s+sh$", out, re.M)
    assert re.search(r"^Mem:\s+8192\s+\d+\s+\d+$", out, re.M)
    assert out.rstrip().endswith("powering off")


def test_headless_output_is_stable_for_a_seed():
    a = malv("boot", "--headless", "--seed", "3", "--run", "run spin 5; ps; uptime")
    b = malv("boot", "--headless", "--seed", "3", "--run", "run spin 5; ps; uptime")
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout


def test_end_of_the_script_powers_off_cleanly():
    r = malv("boot", "--headless", "--run", "run echo bye")
    assert r.returncode == 0, r.stderr  # 0 only when init powered off
    assert r.stdout.rstrip().endswith("bye")


def test_json_log_format_emits_one_object_per_log_line():
    r = malv("boot", "--headless", "--log-format", "json", "--run", "dmesg")
    assert r.returncode == 0
    records = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert records and all({"t_ns", "subsystem", "event"} <= rec.keys() for rec in records)
    assert any(rec["event"] == "spawned" and rec.get("task") == "init" for rec in records)


def test_interactive_boot_without_a_terminal_is_refused_clearly():
    r = malv("boot")
    assert r.returncode == 2
    assert "not a terminal" in r.stderr


def test_bad_options_get_a_clear_error(capsys):
    assert main(["boot", "--headless", "--cpus", "0", "--run", "ps"]) == 2
    assert "cpus must be between 1 and 64" in capsys.readouterr().err
    assert main(["bench", "nosuch"]) == 2
    assert "unknown benchmark 'nosuch'" in capsys.readouterr().err


def test_benchmark_figures_print_as_a_line_and_as_json():
    f = Figure("ipc.x", 300.0, "ops/s", baseline=100.0, baseline_name="asyncio", target=">= 2x")
    assert f.ratio == 3.0
    assert "ratio 3.00x" in f.line()
    assert json.loads(f.json()) == {
        "name": "ipc.x", "value": 300.0, "unit": "ops/s", "baseline": 100.0, "ratio": 3.0,
        "baseline_name": "asyncio", "target": ">= 2x",
    }  # fmt: skip

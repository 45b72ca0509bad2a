"""Tables of measured figures, generated when the site is built (an mkdocs hook).

A page asks for a table with a marker line, and the hook puts the table in its place:

* ``<!-- measured: images -->``: every shipped image manifest, with the size of the image
  `malv build` makes of it now (built into a temporary directory) and its cold boot times,
  read from ``docs/data/image-boot.json``;
* ``<!-- measured: bench -->``: every figure of ``docs/data/bench.json``, the output of
  ``malv bench NAME --json`` run a few times, as the range over those runs.

The data files are written by this file run as a script, on the machine whose figures they
record:

    python docs/hooks/measured.py boot-times         # boots each image, writes image-boot.json
    python docs/hooks/measured.py bench ipc boot     # runs malv bench, writes bench.json

tests/docs/test_measured_tables.py checks that the tables hold what this file generates.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "docs" / "data"
IMAGE_BOOT = DATA / "image-boot.json"
BENCH = DATA / "bench.json"
MARKER = "<!-- measured: {} -->"


# -- the tables ------------------------------------------------------------------------


def image_sizes() -> dict[str, int]:
    """The size in bytes of the image `malv build` makes of each shipped manifest, now."""
    sys.path.insert(0, str(ROOT))
    from image.builder import build, shipped_manifests

    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for manifest in shipped_manifests():
            sizes[manifest.stem] = (
                build(manifest, Path(tmp) / f"{manifest.stem}.pyz").stat().st_size
            )
    return sizes


def images_table(sizes: dict[str, int], boot: dict) -> str:
    """The images' table: each shipped manifest, its description, size and boot times."""
    rows = [
        "| image | what it is | size | cold boot to the prompt and poweroff |",
        "| --- | --- | --- | --- |",
    ]
    for name, size in sizes.items():
        manifest = tomllib.loads((ROOT / "image" / f"{name}.toml").read_text())
        times = boot.get("images", {}).get(name)
        rows.append(
            f"| `{name}` | {manifest.get('description', '')} | {size / 1024:.0f} KiB "
            f"| {_boot_cell(times)} |"
        )
    note = boot.get("how", "")
    return "\n".join(rows) + (f"\n\n{note}" if note else "")


def _boot_cell(times: dict | None) -> str:
    if not times:
        return "not measured"
    runs = times["medians_s"]
    cell = _range(runs, "{:.2f}") + " s"
    if times.get("first_s", 0) > 1.5 * max(runs):  # it compiled: numba's cache was cold
        cell = f"{times['first_s']:.1f} s the first time (compiling), then {cell}"
    return cell


def bench_table(data: dict) -> str:
    """The benchmarks' table: each figure of bench.json, as its range over the runs."""
    rows = [
        "| figure | measured | baseline | ratio | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    figures: dict[str, list[dict]] = {}
    for run in data.get("runs", []):
        for figure in run:
            figures.setdefault(figure["name"], []).append(figure)
    for name, seen in figures.items():
        unit = seen[0]["unit"]
        value = _range([f["value"] for f in seen], _fmt) + f" {unit}"
        baselines = [f["baseline"] for f in seen if "baseline" in f]
        base = "—"
        if baselines:
            base = f"{seen[0].get('baseline_name', 'baseline')}: " + _range(baselines, _fmt)
        ratios = [f["ratio"] for f in seen if f.get("ratio") is not None]
        ratio = _range(ratios, _fmt) + "×" if ratios else "—"
        rows.append(f"| `{name}` | {value} | {base} | {ratio} | {seen[0].get('target', '—')} |")
    how = data.get("how", "")
    return "\n".join(rows) + (f"\n\n{how}" if how else "")


def _fmt(v: float) -> str:
    if abs(v) >= 1e6:
        return f"{v / 1e6:.2f}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.1f}k"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def _range(values: list[float], fmt) -> str:
    form = fmt.format if isinstance(fmt, str) else fmt
    low, high = form(min(values)), form(max(values))
    return low if low == high else f"{low}–{high}"


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def render(markdown: str) -> str:
    """`markdown` with each marker replaced by its table."""
    if MARKER.format("images") in markdown:
        table = images_table(image_sizes(), _load(IMAGE_BOOT))
        markdown = markdown.replace(MARKER.format("images"), table)
    if MARKER.format("bench") in markdown:
        markdown = markdown.replace(MARKER.format("bench"), bench_table(_load(BENCH)))
    return markdown


def on_page_markdown(markdown: str, **_: object) -> str:
    """mkdocs: generate the tables a page asks for."""
    return render(markdown)


# -- recording the data files ----------------------------------------------------------


def _host() -> str:
    load = os.getloadavg()[0]
    return f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f} at the start"


def record_boot_times(boots: int = 7, runs: int = 2) -> dict:
    """Boot each shipped image `boots` times in new processes, `runs` times over: the median
    of each run's boots after its first (the first of all is kept as `first_s`)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    images: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, str(ROOT))
        from image.builder import build, shipped_manifests

        for manifest in shipped_manifests():
            pyz = build(manifest, Path(tmp) / f"{manifest.stem}.pyz")
            medians, first = [], None
            for _ in range(runs):
                times = []
                for _ in range(boots):
                    t0 = time.perf_counter()
                    subprocess.run(
                        [sys.executable, str(pyz), "--headless", "--run", "poweroff"],
                        env=env,
                        check=True,
                        capture_output=True,
                    )
                    times.append(time.perf_counter() - t0)
                first = times[0] if first is None else first
                medians.append(round(statistics.median(times[1:]), 3))
            images[manifest.stem] = {"medians_s": medians, "first_s": round(first, 2)}
    how = (
        f"Cold boot: `python3 IMAGE --headless --run poweroff` in a new process, the median of "
        f"{boots - 1} boots after the first, in {runs} runs (the first boot of all, which may "
        f"compile, is shown apart); recorded on {time.strftime('%Y-%m-%d')} ({_host()}) by "
        f"`python docs/hooks/measured.py boot-times`. Sizes are measured when the site is built."
    )
    return {"images": images, "how": how}


def record_bench(names: list[str], runs: int = 2) -> dict:
    """`malv bench NAME --json`, `runs` times over, for each of `names`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    host = _host()
    results = []
    for _ in range(runs):
        figures = []
        for name in names:
            out = subprocess.run(
                [sys.executable, "-m", "image.cli", "bench", name, "--json"],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            figures += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        results.append(figures)
    how = (
        f"{runs} runs of `malv bench NAME --json` for {', '.join(names)}, recorded on "
        f"{time.strftime('%Y-%m-%d')} ({host}) by "
        f"`python docs/hooks/measured.py bench {' '.join(names)}`."
    )
    return {"runs": results, "how": how}


def main(argv: list[str]) -> int:
    DATA.mkdir(parents=True, exist_ok=True)
    if argv[:1] == ["boot-times"]:
        data, path = record_boot_times(), IMAGE_BOOT
    elif argv[:1] == ["bench"] and argv[1:]:
        data, path = record_bench(argv[1:]), BENCH
    else:
        print("usage: measured.py boot-times | bench NAME...", file=sys.stderr)
        return 2
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The docs' tables of measured figures are generated (docs/hooks/measured.py), not typed.

The image table is made when the site is built, from images built then; the benchmark table
from docs/data/bench.json, which `malv bench NAME --json` wrote. Here: the pages ask for the
tables instead of holding typed copies, the image table holds the size of each image as
`malv build` makes it now, and the benchmark table every figure of the recorded runs.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from image.builder import build, shipped_manifests

ROOT = Path(__file__).resolve().parents[2]


def _hook():
    spec = importlib.util.spec_from_file_location("measured", ROOT / "docs/hooks/measured.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


measured = _hook()


def test_the_pages_ask_for_the_tables_and_hold_no_typed_copy():
    images = (ROOT / "docs/guides/images.md").read_text()
    assert measured.MARKER.format("images") in images
    assert not re.search(r"\|\s*\d+ KiB\s*\|", images), "a typed image size"
    bench = (ROOT / "docs/results/benchmarks.md").read_text()
    assert measured.MARKER.format("bench") in bench
    assert "KiB |" not in (ROOT / "README.md").read_text()


def test_the_image_table_holds_the_size_of_each_image_built_now(tmp_path):
    table = measured.render(measured.MARKER.format("images"))
    rows = {
        line.split("|")[1].strip(" `"): line
        for line in table.splitlines()
        if line.startswith("| `")
    }
    manifests = shipped_manifests()
    assert sorted(rows) == sorted(m.stem for m in manifests)
    for manifest in manifests:
        size = build(manifest, tmp_path / f"{manifest.stem}.pyz").stat().st_size
        assert f"| {size / 1024:.0f} KiB |" in rows[manifest.stem]


def test_every_image_has_recorded_boot_times():
    recorded = json.loads(measured.IMAGE_BOOT.read_text())["images"]
    assert sorted(recorded) == sorted(m.stem for m in shipped_manifests())
    table = measured.images_table({name: 1024 for name in recorded}, {"images": recorded})
    assert "not measured" not in table
    for name, times in recorded.items():
        low, high = min(times["medians_s"]), max(times["medians_s"])
        assert f"{low:.2f}" in table and f"{high:.2f}" in table, name


def test_the_benchmark_table_holds_every_recorded_figure_as_its_range():
    data = json.loads(measured.BENCH.read_text())
    table = measured.render(measured.MARKER.format("bench"))
    names = {f["name"] for run in data["runs"] for f in run}
    assert names
    for name in names:
        values = [f["value"] for run in data["runs"] for f in run if f["name"] == name]
        row = next(line for line in table.splitlines() if line.startswith(f"| `{name}` |"))
        assert measured._range(values, measured._fmt) in row


def test_the_recorded_benchmarks_are_ones_malv_bench_runs():
    from image.cli import BENCHMARKS

    data = json.loads(measured.BENCH.read_text())
    prefixes = {re.split(r"[. ]", f["name"])[0] for run in data["runs"] for f in run}
    assert prefixes <= set(BENCHMARKS)

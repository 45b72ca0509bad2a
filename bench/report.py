"""The one format every benchmark reports in.

A benchmark module in `bench/` exposes ``run(quick: bool = False) -> list[Figure]``.
`malv bench NAME` prints each figure on one line; `--json` prints one JSON
object per figure with `name`, `value`, `unit` and, where measured,
`baseline` and `ratio` (and `target` where the design sets one).
"""

from __future__ import annotations

import json

import attrs


@attrs.frozen
class Figure:
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str | None = None
    target: str | None = None

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    def as_dict(self) -> dict:
        d: dict = {"name": self.name, "value": self.value, "unit": self.unit}
        if self.baseline is not None:
            d["baseline"] = self.baseline
            d["ratio"] = self.ratio
        if self.baseline_name is not None:
            d["baseline_name"] = self.baseline_name
        if self.target is not None:
            d["target"] = self.target
        return d

    def line(self) -> str:
        text = f"{self.name:<34} {_fmt(self.value):>12} {self.unit}"
        if self.baseline is not None:
            base = self.baseline_name or "baseline"
            text += f"   vs {base} {_fmt(self.baseline)} {self.unit}   ratio {self.ratio:.2f}x"
        if self.target is not None:
            text += f"   (target {self.target})"
        return text

    def json(self) -> str:
        return json.dumps(self.as_dict())


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.2f}M"
    if abs(v) >= 1e3:
        return f"{v / 1e3:.1f}k"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.4g}"

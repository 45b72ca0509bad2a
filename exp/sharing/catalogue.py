"""The models the sharing experiments run (`exp/sharing`).

Each model is an Orion kernel profile in --trace-dir, or, by default, the
synthetic generator with the model's published summary figures.  Open-loop
services default to a Poisson rate of Orion's trace, and LithOS's slip
bounds what a quota or a right-sized kernel may give up.
"""

from __future__ import annotations

from pathlib import Path

from drivers.vgpu.errors import InvalidArgument
from drivers.vgpu.traces import (
    MODELS,
    ORION_DEVICE,
    ModelSummary,
    Workload,
    load_orion_csv,
    synthetic_workload,
)

#: Models by key: the Orion profile's file stem, and the published summary
#: the synthetic generator draws an equivalent from (figures of those profiles).
CATALOGUE: dict[str, tuple[str, ModelSummary]] = {
    "resnet50": ("resnet50_4_fwd", MODELS["resnet50_b4_inference"]),
    "resnet101": (
        "resnet101_4_fwd",
        ModelSummary("resnet101_b4_inference", 345, 11_567_105, 1.16, 0.43, 0.30, 49, 392),
    ),
    "bert": ("bert_2_fwd", MODELS["bert_b2_inference"]),
    "mobilenetv2": ("mobilenetv2_4_fwd", MODELS["mobilenetv2_b4_inference"]),
    "transformer_xl": (
        "transformer_xl_4_fwd",
        ModelSummary("transformer_xl_b4_inference", 459, 16_671_218, 1.07, 0.39, 0.28, 96, 640),
    ),
    "resnet50_train": ("resnet50_32_fb1", MODELS["resnet50_b32_training"]),
    "bert_train": (
        "bert_8_fb1",
        ModelSummary("bert_b8_training", 4777, 190_766_381, 1.40, 0.67, 0.06, 1, 5724),
    ),
}


#: Mean request rate of Orion's inter-arrival trace (1 / 48 ms): the default
#: Poisson rate of open-loop services, so both defaults load them alike.
DEFAULT_RATE_PER_S = 20.8


MS = 1e6


#: LithOS's slip: the latency a quota or a right-sized kernel may give up.
SLIP = 1.1


def load_model(
    key: str, trace_dir: str | None, seed: int = 0, measured_on: str | None = None
) -> Workload:
    """Model `key` as measured: its Orion profile in `trace_dir` (measured on
    `measured_on`, default Orion's V100), or drawn by the synthetic generator
    (for the device that runs it, unless `measured_on` names one)."""
    stem, summary = CATALOGUE[key]
    if trace_dir is None:
        return synthetic_workload(summary, seed, measured_on)
    path = Path(trace_dir) / f"{stem}.csv"
    if not path.is_file():
        raise InvalidArgument(f"{path}: no such profile (model {key!r} reads {stem}.csv)")
    return load_orion_csv(path, measured_on or ORION_DEVICE)

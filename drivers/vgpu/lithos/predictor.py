"""LithOS's online latency predictor (LithOS §5.4).

LithOS predicts how long each atom will run, to size atoms, to set the
TPC scheduler's busy-until timers and to decide what may run on stolen
TPCs.  It learns online, from the atoms it has seen complete; nothing is
profiled ahead.

Here a prediction is keyed by the kernel and its position in the request
(the same kernel name recurs at many positions, with other shapes), and
predicts the time of one *wave*: an atom of ``w`` waves is predicted to
take ``w`` times the key's wave time.  The wave time is an exponentially
weighted average of observed atom times over their waves.

A prediction is a misprediction when it is off by more than
`threshold_ns` (50 us); `misprediction_rate` is their share of the atoms
that had a prediction.
"""

from __future__ import annotations

from collections.abc import Hashable


class LatencyPredictor:
    def __init__(self, threshold_ns: int = 50_000, weight: float = 0.5) -> None:
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"predictor weight must be within (0, 1], got {weight}")
        self.threshold_ns = threshold_ns
        self.weight = weight
        self._wave_ns: dict[Hashable, float] = {}
        self.predictions = 0
        self.mispredictions = 0
        self.abs_error_ns = 0.0

    def wave_ns(self, key: Hashable) -> float | None:
        """The predicted time of one wave of `key`, or None if it was never seen."""
        return self._wave_ns.get(key)

    def predict(self, key: Hashable, waves: int) -> int | None:
        wave = self._wave_ns.get(key)
        return None if wave is None else round(wave * waves)

    def observe(self, key: Hashable, waves: int, actual_ns: int, predicted_ns: int | None) -> None:
        """An atom of `key` with `waves` waves took `actual_ns`; `predicted_ns` was said of it."""
        if predicted_ns is not None:
            self.predictions += 1
            error = abs(actual_ns - predicted_ns)
            self.abs_error_ns += error
            if error > self.threshold_ns:
                self.mispredictions += 1
        sample = actual_ns / max(1, waves)
        old = self._wave_ns.get(key)
        self._wave_ns[key] = sample if old is None else old + self.weight * (sample - old)

    @property
    def misprediction_rate(self) -> float:
        return self.mispredictions / self.predictions if self.predictions else 0.0

    @property
    def mean_abs_error_ns(self) -> float:
        return self.abs_error_ns / self.predictions if self.predictions else 0.0

    def __len__(self) -> int:
        return len(self._wave_ns)

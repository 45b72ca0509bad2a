"""The feature store: schema'd feature vectors in rings, queried by time (LAKE §4.2).

A *registry* holds vectors of one schema (named float features), each with a
virtual timestamp and an integer key (a pid, a page, a device...).  It is a
ring of fixed capacity: the oldest entries are overwritten.  Modules capture
features as events happen and later query a time window, truncate what they
no longer need, or score a window with a model in one batched `infer`.

One store per kernel; any module may read any registry, so one module's
features can feed another's model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from kernel.mlaas.inference import InferenceService, Model, Request


class FeatureError(ValueError):
    """A vector that does not fit its registry's schema, or an unknown registry."""


class Features(NamedTuple):
    """The result of a query, oldest first."""

    times_ns: np.ndarray  # int64
    keys: np.ndarray  # int64
    values: np.ndarray  # float32, one row per entry

    def __len__(self) -> int:
        return len(self.times_ns)


class FeatureRegistry:
    def __init__(
        self,
        name: str,
        schema: Sequence[str],
        capacity: int,
        clock: Callable[[], int],
        service: InferenceService | None,
    ) -> None:
        schema = tuple(schema)
        if (
            not schema
            or len(set(schema)) != len(schema)
            or not all(isinstance(f, str) and f for f in schema)
        ):
            raise FeatureError(
                f"registry {name!r}: the schema must be distinct feature names, got {schema!r}"
            )
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
            raise FeatureError(
                f"registry {name!r}: capacity must be a positive int, got {capacity!r}"
            )
        self.name = name
        self.schema = schema
        self.capacity = capacity
        self._clock = clock
        self._service = service
        self._values = np.zeros((capacity, len(schema)), np.float32)
        self._times = np.zeros(capacity, np.int64)
        self._keys = np.zeros(capacity, np.int64)
        self._next = 0  # where the next entry goes
        self._count = 0
        self._last_ns = -1

    def __len__(self) -> int:
        return self._count

    def capture(
        self,
        vector: Sequence[float] | Mapping[str, float],
        *,
        key: int = 0,
        t_ns: int | None = None,
    ) -> None:
        """Append one vector (a sequence in schema order, or a mapping by name)."""
        if isinstance(vector, Mapping):
            missing = set(self.schema) - set(vector)
            extra = set(vector) - set(self.schema)
            if missing or extra:
                raise FeatureError(
                    f"registry {self.name!r}: missing {sorted(missing)}, unknown {sorted(extra)}"
                )
            vector = [vector[f] for f in self.schema]
        row = np.asarray(vector, np.float32)
        if row.shape != (len(self.schema),):
            raise FeatureError(
                f"registry {self.name!r} takes {len(self.schema)} features, got shape {row.shape}"
            )
        t = self._clock() if t_ns is None else int(t_ns)
        if t < self._last_ns:
            raise FeatureError(f"registry {self.name!r}: time goes forward ({t} < {self._last_ns})")
        i = self._next
        self._values[i] = row
        self._times[i] = t
        self._keys[i] = key
        self._last_ns = t
        self._next = (i + 1) % self.capacity
        self._count = min(self._count + 1, self.capacity)

    def _ordered(self) -> np.ndarray:
        start = (self._next - self._count) % self.capacity
        return (start + np.arange(self._count)) % self.capacity

    def query(
        self, since_ns: int | None = None, until_ns: int | None = None, *, key: int | None = None
    ) -> Features:
        """Entries with ``since_ns <= t < until_ns`` (and `key`, if given), oldest first."""
        idx = self._ordered()
        times = self._times[idx]
        keep = np.ones(len(idx), bool)
        if since_ns is not None:
            keep &= times >= since_ns
        if until_ns is not None:
            keep &= times < until_ns
        if key is not None:
            keep &= self._keys[idx] == key
        idx = idx[keep]
        return Features(self._times[idx].copy(), self._keys[idx].copy(), self._values[idx].copy())

    def latest(self, n: int = 1, *, key: int | None = None) -> Features:
        found = self.query(key=key)
        return Features(*(a[-n:] for a in found))

    def truncate(self, before_ns: int) -> int:
        """Drop every entry older than `before_ns`; returns how many were dropped."""
        idx = self._ordered()
        drop = int(np.count_nonzero(self._times[idx] < before_ns))
        # Time only goes forward, so the old entries are the oldest ones.
        self._count -= drop
        return drop

    def score(
        self,
        model: Model,
        since_ns: int | None = None,
        until_ns: int | None = None,
        *,
        key: int | None = None,
    ) -> tuple[Features, Request | None]:
        """Score a window of entries with `model` in one batched inference."""
        found = self.query(since_ns, until_ns, key=key)
        if not len(found) or self._service is None:
            return found, None
        return found, self._service.submit(model, found.values)


class FeatureStore:
    """The kernel's registries, by name."""

    def __init__(self, clock: Callable[[], int], service: InferenceService | None = None) -> None:
        self._clock = clock
        self._service = service
        self._registries: dict[str, FeatureRegistry] = {}

    def create_registry(
        self, name: str, schema: Sequence[str], capacity: int = 4096
    ) -> FeatureRegistry:
        """A new registry, or the existing one if it has the same schema."""
        old = self._registries.get(name)
        if old is not None:
            if old.schema != tuple(schema):
                raise FeatureError(f"registry {name!r} exists with schema {old.schema}")
            return old
        reg = FeatureRegistry(name, schema, capacity, self._clock, self._service)
        self._registries[name] = reg
        return reg

    def registry(self, name: str) -> FeatureRegistry:
        try:
            return self._registries[name]
        except KeyError:
            raise FeatureError(f"no feature registry {name!r}") from None

    def names(self) -> list[str]:
        return sorted(self._registries)

    def drop(self, name: str) -> None:
        self._registries.pop(name, None)

    def __contains__(self, name: Any) -> bool:
        return name in self._registries

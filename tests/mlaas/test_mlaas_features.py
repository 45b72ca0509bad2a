"""The feature store: schema'd vectors in rings, queried by time, truncated, scored."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel import Kernel
from kernel.mlaas import FeatureError, FeatureStore


def clock_at(t):
    return lambda: t[0]


def test_a_registry_keeps_vectors_with_their_time_and_key():
    t = [0]
    store = FeatureStore(clock_at(t))
    reg = store.create_registry("io", ("size", "latency"), capacity=8)
    for i in range(5):
        t[0] = 100 * i
        reg.capture([i, 10 * i], key=i % 2)
    found = reg.query(since_ns=100, until_ns=400)
    assert list(found.times_ns) == [100, 200, 300]
    np.testing.assert_array_equal(found.values[:, 1], [10, 20, 30])
    assert list(reg.query(key=1).times_ns) == [100, 300]
    assert list(reg.latest(2).keys) == [1, 0]


def test_capture_by_name_checks_the_schema():
    store = FeatureStore(lambda: 0)
    reg = store.create_registry("io", ("size", "latency"))
    reg.capture({"latency": 2.0, "size": 1.0})
    assert list(reg.latest().values[0]) == [1.0, 2.0]
    with pytest.raises(FeatureError, match=r"missing \['latency'\], unknown \['lat'\]"):
        reg.capture({"size": 1.0, "lat": 2.0})
    with pytest.raises(FeatureError, match="takes 2 features"):
        reg.capture([1.0, 2.0, 3.0])
    with pytest.raises(FeatureError, match="exists with schema"):
        store.create_registry("io", ("size",))
    assert store.create_registry("io", ("size", "latency")) is reg
    with pytest.raises(FeatureError, match="no feature registry 'nope'"):
        store.registry("nope")


@settings(max_examples=50, deadline=None)
@given(
    capacity=st.integers(1, 12),
    gaps=st.lists(st.integers(0, 5), max_size=40),
    cut=st.integers(0, 200),
)
def test_the_ring_keeps_the_newest_entries_and_truncate_drops_the_oldest(capacity, gaps, cut):
    t = [0]
    reg = FeatureStore(clock_at(t)).create_registry("r", ("x",), capacity=capacity)
    model: list[tuple[int, float]] = []
    for i, gap in enumerate(gaps):
        t[0] += gap
        reg.capture([float(i)])
        model.append((t[0], float(i)))
    model = model[-capacity:]
    got = reg.query()
    assert list(got.times_ns) == [m[0] for m in model]
    assert list(got.values[:, 0]) == [m[1] for m in model]
    dropped = reg.truncate(cut)
    kept = [m for m in model if m[0] >= cut]
    assert dropped == len(model) - len(kept) and len(reg) == len(kept)
    assert list(reg.query().values[:, 0]) == [m[1] for m in kept]


def test_time_only_goes_forward():
    t = [10]
    reg = FeatureStore(clock_at(t)).create_registry("r", ("x",))
    reg.capture([1.0])
    with pytest.raises(FeatureError, match="time goes forward"):
        reg.capture([1.0], t_ns=5)


def test_a_window_is_scored_in_one_batched_inference(kernel: Kernel):
    store = kernel.mlaas.inference.features
    reg = store.create_registry("io", ("a", "b"))
    for i in range(6):
        reg.capture([i, -i])
    model = kernel.mlaas.inference.model("sum", (2, 1), weights=[(np.ones((2, 1)), np.zeros(1))])
    found, request = reg.score(model)
    assert len(found) == 6
    np.testing.assert_allclose(request.result()[:, 0], np.zeros(6), atol=1e-6)
    assert request.batch_rows == 6 and kernel.mlaas.inference.totals["batches"] == 1

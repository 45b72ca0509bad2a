"""Kernel-space inference: models, batching, back ends and the crossover policy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from workloads import memory_worker

from kernel import Kernel
from kernel.mlaas import InferenceError, Model, WeightShapeError
from kernel.mlaas.inference import CPU_CALL_NS, CpuBackend


@pytest.fixture
def service(kernel: Kernel):
    return kernel.mlaas.inference


def test_requests_share_a_batch_until_its_time_window_ends(kernel: Kernel, service):
    model = service.model("m", (3, 4, 2))
    got = []
    a = service.submit(model, [1, 2, 3], callback=got.append)
    b = service.submit(model, [[0, 0, 1], [1, 1, 1]], callback=got.append)
    assert not a.done and not b.done
    kernel.run()  # the window timer closes the batch; the results arrive after its cost
    assert a.done and b.done and a.batch_rows == 3 == b.batch_rows
    assert service.totals["batches"] == 1
    assert a.value.shape == (2,) and b.value.shape == (2, 2)
    np.testing.assert_allclose(
        b.value, model.forward(np.array([[0, 0, 1], [1, 1, 1]], np.float32)), rtol=1e-6
    )
    cost_ns = service.log[-1][4]
    assert a.done_ns == service.window_ns + cost_ns == kernel.loop.now_ns
    assert len(got) == 2


def test_a_full_batch_runs_at_once(service):
    service.max_batch = 4
    model = service.model("m", (2, 2))
    first = service.submit(model, np.ones((3, 2)))
    second = service.submit(model, np.ones((1, 2)))
    assert first.done and second.done and first.batch_rows == 4


def test_a_request_bigger_than_the_open_batch_room_closes_it_first(service):
    service.max_batch = 4
    model = service.model("m", (2, 2))
    small = service.submit(model, np.ones((2, 2)))
    big = service.submit(model, np.ones((3, 2)))
    assert small.done and small.batch_rows == 2 and not big.done
    assert big.result().shape == (3, 2)


def test_result_closes_the_batch_early(service):
    model = service.model("m", (2, 3, 1), output="sigmoid")
    out = service.submit(model, [0.5, -0.5]).result()
    assert out.shape == (1,) and 0.0 < out[0] < 1.0


def test_features_of_the_wrong_width_are_refused_at_once(service):
    model = service.model("m", (3, 1))
    with pytest.raises(
        InferenceError, match=r"takes rows of 3 features, got an array of shape \(4,\)"
    ):
        service.submit(model, [1, 2, 3, 4])
    with pytest.raises(InferenceError, match="needs a Model"):
        service.submit("m", [1, 2, 3])


@settings(max_examples=60, deadline=None)
@given(shapes=st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=3))
def test_weights_of_the_wrong_shape_are_an_error_never_a_hang(shapes):
    model = Model("m", (3, 4, 2))
    weights = [(np.zeros((a, b)), np.zeros(b)) for a, b in shapes]
    if shapes == [(3, 4), (4, 2)]:
        model.load_weights(weights)
        assert model.version == 1
    else:
        with pytest.raises(WeightShapeError):
            model.load_weights(weights)
        assert model.version == 0  # nothing replaced


def test_weights_load_from_a_file_at_run_time(tmp_path):
    model = Model("m", (2, 3, 1))
    path = tmp_path / "w.npz"
    np.savez(path, W0=np.ones((2, 3)), b0=np.zeros(3), W1=np.ones((3, 1)), b1=np.zeros(1))
    model.load_weights(str(path))
    assert model.forward(np.ones((1, 2), np.float32))[0, 0] == pytest.approx(6.0)
    np.savez(path, W0=np.ones((2, 3)), b0=np.zeros(3))
    with pytest.raises(WeightShapeError, match="no array 'W1'"):
        model.load_weights(str(path))
    np.savez(path, W0=np.full((2, 3), np.nan), b0=np.zeros(3), W1=np.ones((3, 1)), b1=np.zeros(1))
    with pytest.raises(WeightShapeError, match="not finite"):
        model.load_weights(str(path))


def test_the_cpu_back_end_charges_its_documented_cost_model():
    model = Model("linnos", (31, 256, 2))
    _, cost = CpuBackend().run(model, np.zeros((8, 31), np.float32), 0)
    assert cost == CPU_CALL_NS + 8 * (31 * 256 + 256 * 2) + 8 * (256 + 2)


def test_the_vgpu_back_end_computes_what_the_cpu_does_and_charges_engine_time(
    kernel: Kernel, service
):
    from drivers.vgpu.inference import REMOTE_CALL_NS, attach

    backend = attach(kernel)
    model = service.model("kml", (5, 15, 5, 4), output="softmax")
    x = np.random.default_rng(0).standard_normal((32, 5)).astype(np.float32)
    y, cost = backend.run(model, x, 0)
    np.testing.assert_allclose(y, model.forward(x), rtol=1e-5, atol=1e-6)
    assert cost > REMOTE_CALL_NS and cost == pytest.approx(backend.estimate_ns(model, 32), rel=0.05)


def test_the_crossover_policy_picks_the_cheaper_side(kernel: Kernel, service):
    from drivers.vgpu.inference import attach

    attach(kernel)
    model = service.model("linnos", (31, 256, 2))
    policy = service.policy
    crossover = policy.crossover_rows(model)
    assert crossover is not None and 1 < crossover < 64
    assert policy.choose(model, crossover - 1) == ("cpu", "cpu-cheaper")
    assert policy.choose(model, crossover) == ("vgpu", "cheaper")
    request = service.submit(model, np.zeros((256, 31)))
    request.result()
    assert request.backend == "vgpu"


class BusyGpu:
    """A back end that reports a contended device (another process, 90% busy)."""

    kind = "vgpu"

    def estimate_ns(self, model, rows):
        return 1.0  # always "cheaper"

    def run(self, model, x, now_ns):
        raise AssertionError("a contended vGPU must not be used")

    def contention(self):
        return 2, 0.9


def test_a_contended_vgpu_is_left_alone(service):
    service.register_backend("vgpu", BusyGpu())
    model = service.model("m", (4, 2))
    request = service.submit(model, np.zeros((512, 4)))
    request.result()
    assert request.backend == "cpu" and service.log[-1][-1] == "contended"


def test_a_failing_device_falls_back_to_the_cpu(service, kernel: Kernel):
    class Broken(BusyGpu):
        def contention(self):
            return 1, 0.0

    service.register_backend("vgpu", Broken())
    model = service.model("m", (4, 2))
    request = service.submit(model, np.zeros((4, 4)))
    assert request.result().shape == (4, 2) and request.backend == "cpu"
    assert kernel.log.find("inference fell back to cpu")


def test_a_module_infers_through_its_context_and_its_callbacks_are_guarded(
    kernel: Kernel, tmp_path
):
    path = tmp_path / "scorer.py"
    path.write_text(
        "from kernel.mlaas import SchedAdvisor\n"
        "class Scorer(SchedAdvisor):\n"
        "    name = 'scorer'\n"
        "    def on_load(self):\n"
        "        self.model = self.ctx.model('score', (2, 4, 1))\n"
        "        self.seen = []\n"
        "    def on_spawn(self, task):\n"
        "        self.ctx.infer(self.model, [task.pid, 1.0], callback=self.scored)\n"
        "    def scored(self, outputs):\n"
        "        self.seen.append(float(outputs[0]))\n"
        "        if len(self.seen) == 2:\n"
        "            raise RuntimeError('enough')\n"
    )
    rec = kernel.mlaas.insmod(str(path))
    advisor = rec.advisor  # the kernel lets go of it when the module is ejected
    for _ in range(2):
        kernel.spawn(lambda proc: (yield from ()), name="t")
    kernel.run()
    assert len(advisor.seen) == 2 and rec.infer_rows == 2
    assert rec.state == "ejected" and "scored raised RuntimeError: enough" in rec.report.message


def test_a_memory_advisor_waiting_for_inference_delays_the_faulting_task(tmp_path):
    def elapsed_ns(infer: bool) -> tuple[int, float]:
        path = tmp_path / f"fifo_{infer}.py"
        path.write_text(
            "from kernel.mlaas import MemoryAdvisor\n"
            "class Fifo(MemoryAdvisor):\n"
            "    name = 'fifo'\n"
            "    def on_load(self):\n"
            "        self.model = self.ctx.model('m', (4, 8, 1))\n"
            "    def select_victim(self, candidates):\n"
            f"        if {infer}:\n"
            "            self.ctx.infer(self.model, [[1.0, 2.0, 3.0, 4.0]] * 8).result()\n"
            "        return candidates[0]\n"
        )
        k = Kernel(seed=0, cpus=1, frames=16)
        try:
            rec = k.mlaas.insmod(str(path))
            results: list = []
            k.spawn(memory_worker(24, 1, results))
            k.run()
            assert results == [0]
            return k.loop.now_ns, rec.infer_ns.get("cpu", 0.0)
        finally:
            k.shutdown()

    plain, _ = elapsed_ns(False)
    inferring, charged = elapsed_ns(True)
    assert charged > 0
    assert inferring - plain == pytest.approx(charged, rel=1e-6)

"""Kernel-space inference for advisors: models, batching, back ends and the crossover policy.

This is LAKE's machinery in Micro-LAKE form.  A module calls
``ctx.infer(model, features)``; requests for one model share a batch, and a
batch closes when it holds `max_batch` rows, when its time window (virtual
time) ends, or when a caller needs the answer now (``request.result()``).

A closed batch runs on one *back end*:

* ``cpu`` (always present): numpy computes the answer and the time charged is
  the CPU cost model below;
* ``vgpu`` (registered by the vGPU driver, `drivers/vgpu/inference.py`): the
  vGPU computes the answer with its functional MLP and charges the time of
  its timing engine, launch and copies included.

Which one runs it is the `CrossoverPolicy` (LAKE §4.3, §6): each back end's
cost model, corrected by what its batches really cost, picks the cheaper
side for the batch's size; and when the vGPU is busy with other work (more
than one GPU process and over 70% utilisation, LAKE's contention policy) the
batch stays on the CPU.

CPU cost model.  Kernel-space code runs its float loops scalar and must save
the FPU state around them (Linux ``kernel_fpu_begin/end``), so a batch costs
``CPU_CALL_NS`` plus one ns per multiply-accumulate (``CPU_MACS_PER_NS`` =
1, about one core at 3 GHz spending three cycles per scalar FMA with its
loads) plus ``CPU_ACT_NS`` per activation computed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from kernel.mlaas.features import FeatureStore

if TYPE_CHECKING:
    from kernel.kernel import Kernel
    from kernel.mlaas.core import ModuleRecord

CPU_CALL_NS = 2_000
CPU_MACS_PER_NS = 1.0
CPU_ACT_NS = 1.0

DEFAULT_WINDOW_NS = 100_000  # a batch waits at most 100 us for company
DEFAULT_MAX_BATCH = 1024

#: LAKE's contention policy: stay on the CPU when more than this many
#: processes use the GPU and its utilisation is above this fraction.
GPU_BUSY_PROCESSES = 1
GPU_BUSY_UTILISATION = 0.70

OUTPUTS = ("linear", "sigmoid", "softmax")


class InferenceError(ValueError):
    """A request the inference API cannot take (wrong model, wrong feature width)."""


class WeightShapeError(InferenceError):
    """Weights loaded at run time do not fit the model's shape."""


# -- models --------------------------------------------------------------------------


class Model:
    """A multi-layer perceptron: ``layers = (inputs, hidden..., outputs)``, ReLU
    between layers, and a `linear`, `sigmoid` or `softmax` output."""

    def __init__(
        self,
        name: str,
        layers: Sequence[int],
        *,
        output: str = "linear",
        weights: Any = None,
        seed: int = 0,
    ) -> None:
        layers = tuple(layers)
        if len(layers) < 2 or any(
            isinstance(n, bool) or not isinstance(n, int) or n <= 0 for n in layers
        ):
            raise InferenceError(f"model layers must be at least two positive ints, got {layers!r}")
        if output not in OUTPUTS:
            raise InferenceError(
                f"model output must be one of {', '.join(OUTPUTS)}, got {output!r}"
            )
        self.name = name
        self.layers = layers
        self.output = output
        self.version = 0
        rng = np.random.default_rng(seed)
        self.weights: list[tuple[np.ndarray, np.ndarray]] = [
            (
                (rng.standard_normal((n_in, n_out)) * math.sqrt(2.0 / n_in)).astype(np.float32),
                np.zeros(n_out, np.float32),
            )
            for n_in, n_out in zip(layers, layers[1:], strict=False)
        ]
        if weights is not None:
            self.load_weights(weights)

    @property
    def inputs(self) -> int:
        return self.layers[0]

    @property
    def outputs(self) -> int:
        return self.layers[-1]

    @property
    def shapes(self) -> list[tuple[tuple[int, int], tuple[int]]]:
        return [((a, b), (b,)) for a, b in zip(self.layers, self.layers[1:], strict=False)]

    @property
    def macs_per_row(self) -> int:
        return sum(a * b for a, b in zip(self.layers, self.layers[1:], strict=False))

    @property
    def activations_per_row(self) -> int:
        return sum(self.layers[1:])

    def load_weights(self, weights: Any) -> None:
        """Replace the weights with a list of ``(W, b)`` pairs, or the arrays
        ``W0, b0, W1, b1, ...`` of an ``.npz`` file (a path).  Every array is
        checked against the model's shape before any is replaced."""
        if isinstance(weights, (str, bytes)) or hasattr(weights, "__fspath__"):
            names = [n for i in range(len(self.layers) - 1) for n in (f"W{i}", f"b{i}")]
            try:
                with np.load(weights) as data:
                    missing = [n for n in names if n not in data.files]
                    if missing:
                        raise WeightShapeError(
                            f"{self.name}: the weights file has no array {missing[0]!r}"
                        )
                    weights = [(data[f"W{i}"], data[f"b{i}"]) for i in range(len(self.layers) - 1)]
            except (OSError, ValueError) as exc:
                if isinstance(exc, WeightShapeError):
                    raise
                raise WeightShapeError(f"{self.name}: cannot read weights: {exc}") from None
        try:
            pairs = [(np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b in weights]
        except (TypeError, ValueError) as exc:
            raise WeightShapeError(
                f"{self.name}: weights must be (W, b) pairs of arrays: {exc}"
            ) from None
        if len(pairs) != len(self.layers) - 1:
            raise WeightShapeError(
                f"{self.name}: {len(pairs)} weight layers given, the model {self.layers} has {len(self.layers) - 1}"
            )
        for i, ((w, b), (w_shape, b_shape)) in enumerate(zip(pairs, self.shapes, strict=True)):
            if w.shape != w_shape or b.shape != b_shape:
                raise WeightShapeError(
                    f"{self.name}: layer {i} has W{w.shape} b{b.shape}; the model needs W{w_shape} b{b_shape}"
                )
            if not (np.isfinite(w).all() and np.isfinite(b).all()):
                raise WeightShapeError(f"{self.name}: layer {i} has weights that are not finite")
        self.weights = pairs
        self.version += 1

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The reference forward pass, float32, on a matrix of rows."""
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(self.weights):
            h = h @ w + b
            if i < last:
                np.maximum(h, 0.0, out=h)
        return finish_output(h, self.output)

    def __repr__(self) -> str:
        return f"<Model {self.name} {'->'.join(map(str, self.layers))} {self.output}>"


def finish_output(h: np.ndarray, output: str) -> np.ndarray:
    if output == "sigmoid":
        return 1.0 / (1.0 + np.exp(-h))
    if output == "softmax":
        e = np.exp(h - h.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return h


# -- back ends -----------------------------------------------------------------------------


class InferenceBackend(Protocol):
    """What a back end offers the inference service (the vGPU driver implements one)."""

    kind: str

    def estimate_ns(self, model: Model, rows: int) -> float:
        """The cost model: virtual ns for a batch of `rows`, uncontended."""

    def run(self, model: Model, x: np.ndarray, now_ns: int) -> tuple[np.ndarray, int]:
        """Compute the outputs of a batch; return them and the virtual ns it took."""

    def contention(self) -> tuple[int, float] | None:
        """(processes using the device, utilisation in [0, 1]), or None for the CPU."""


class CpuBackend:
    """numpy computes; the time is the CPU cost model of this file's docstring."""

    kind = "cpu"

    def estimate_ns(self, model: Model, rows: int) -> float:
        return CPU_CALL_NS + rows * (
            model.macs_per_row / CPU_MACS_PER_NS + model.activations_per_row * CPU_ACT_NS
        )

    def run(self, model: Model, x: np.ndarray, now_ns: int) -> tuple[np.ndarray, int]:
        return model.forward(x), int(round(self.estimate_ns(model, len(x))))

    def contention(self) -> None:
        return None


# -- the crossover policy ---------------------------------------------------------------------


class CrossoverPolicy:
    """Choose the back end for a batch: the cheaper by calibrated cost, unless the vGPU is contended."""

    def __init__(self, backends: dict[str, InferenceBackend]) -> None:
        self.backends = backends
        # (back end, model name) -> EWMA of measured / estimated cost
        self.calibration: dict[tuple[str, str], float] = {}

    def estimate_ns(self, kind: str, model: Model, rows: int) -> float:
        return self.backends[kind].estimate_ns(model, rows) * self.calibration.get(
            (kind, model.name), 1.0
        )

    def choose(self, model: Model, rows: int) -> tuple[str, str]:
        """(back end, why): why is ``only-cpu``, ``contended``, ``cheaper`` or ``cpu-cheaper``."""
        gpu = self.backends.get("vgpu")
        if gpu is None:
            return "cpu", "only-cpu"
        busy = gpu.contention()
        if busy is not None and busy[0] > GPU_BUSY_PROCESSES and busy[1] > GPU_BUSY_UTILISATION:
            return "cpu", "contended"
        if self.estimate_ns("vgpu", model, rows) < self.estimate_ns("cpu", model, rows):
            return "vgpu", "cheaper"
        return "cpu", "cpu-cheaper"

    def crossover_rows(self, model: Model, limit: int = DEFAULT_MAX_BATCH) -> int | None:
        """The smallest batch the vGPU is estimated to run cheaper, or None."""
        if "vgpu" not in self.backends:
            return None
        for rows in range(1, limit + 1):
            if self.estimate_ns("vgpu", model, rows) < self.estimate_ns("cpu", model, rows):
                return rows
        return None

    def observe(self, kind: str, model: Model, rows: int, cost_ns: int) -> None:
        estimate = self.backends[kind].estimate_ns(model, rows)
        if estimate <= 0:
            return
        key = (kind, model.name)
        ratio = cost_ns / estimate
        old = self.calibration.get(key)
        self.calibration[key] = ratio if old is None else 0.8 * old + 0.2 * ratio


# -- requests and batches -----------------------------------------------------------------------


class Request:
    """One `infer` call: a future for its rows' outputs."""

    __slots__ = (
        "waited",
        "service",
        "model",
        "x",
        "single",
        "owner",
        "callback",
        "done",
        "value",
        "backend",
        "done_ns",
        "batch_rows",
    )

    def __init__(
        self,
        service: InferenceService,
        model: Model,
        x: np.ndarray,
        single: bool,
        owner: ModuleRecord | None,
        callback: Callable[[np.ndarray], Any] | None,
    ) -> None:
        self.service = service
        self.model = model
        self.x = x
        self.single = single
        self.owner = owner
        self.callback = callback
        self.done = False
        self.waited = False
        self.value: np.ndarray | None = None
        self.backend = ""
        self.done_ns = 0
        self.batch_rows = 0

    def result(self) -> np.ndarray:
        """The outputs (a vector for a single input, else a matrix), closing the batch
        now if needed.  The caller waits for them: the time until they are ready is
        charged to its module (`InferenceService.charge`)."""
        if not self.done:
            self.service.flush(self.model)
        if not self.waited:
            self.waited = True
            wait_ns = self.done_ns - self.service.kernel.loop.now_ns
            if wait_ns > 0 and self.owner is not None and self.service.charge is not None:
                self.service.charge(self.owner, wait_ns)
        assert self.value is not None
        return self.value


class _Batch:
    __slots__ = ("model", "requests", "rows", "timer")

    def __init__(self, model: Model) -> None:
        self.model = model
        self.requests: list[Request] = []
        self.rows = 0
        self.timer: Any = None


class InferenceService:
    """One per kernel: the models, the open batches, the back ends and the policy."""

    def __init__(
        self,
        kernel: Kernel,
        *,
        deliver: Callable[[Request], None] | None = None,
        charge: Callable[[Any, int], None] | None = None,
    ) -> None:
        self.kernel = kernel
        self.backends: dict[str, InferenceBackend] = {"cpu": CpuBackend()}
        self.policy = CrossoverPolicy(self.backends)
        self.window_ns = DEFAULT_WINDOW_NS
        self.max_batch = DEFAULT_MAX_BATCH
        self.models: dict[str, Model] = {}
        self.features = FeatureStore(lambda: kernel.loop.now_ns, self)
        self._open: dict[int, _Batch] = {}  # id(model) -> its open batch
        self._deliver = deliver  # runs a request's callback (guarded by the MLaaS core)
        self.charge = charge  # charges a module's wait for a result to whoever waits on it
        self.log: list[
            tuple[int, str, str, int, int, str]
        ] = []  # (t, model, backend, rows, cost, why)
        self.totals = {"batches": 0, "rows": 0, "cpu_ns": 0, "vgpu_ns": 0}

    def register_backend(self, kind: str, backend: InferenceBackend) -> None:
        if kind == "cpu":
            raise InferenceError("the cpu back end is built in")
        for attr in ("estimate_ns", "run", "contention"):
            if not callable(getattr(backend, attr, None)):
                raise InferenceError(f"an inference back end needs a callable {attr}()")
        self.backends[kind] = backend
        self.kernel.log.info("mlaas", "inference backend registered", backend=kind)

    def model(
        self,
        name: str,
        layers: Sequence[int],
        *,
        output: str = "linear",
        weights: Any = None,
        seed: int = 0,
    ) -> Model:
        model = Model(name, layers, output=output, weights=weights, seed=seed)
        self.models[name] = model
        return model

    def drop_models(self, prefix: str) -> None:
        for name in [n for n in self.models if n.startswith(prefix)]:
            model = self.models.pop(name)
            self._open.pop(id(model), None)

    # -- requests ---------------------------------------------------------------------

    def submit(
        self,
        model: Model,
        features: Any,
        *,
        owner: ModuleRecord | None = None,
        callback: Callable[[np.ndarray], Any] | None = None,
    ) -> Request:
        if not isinstance(model, Model):
            raise InferenceError(
                f"infer needs a Model (from ctx.model), got {type(model).__name__}"
            )
        try:
            x = np.asarray(features, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InferenceError(f"features for {model.name} are not numbers: {exc}") from None
        single = x.ndim == 1
        if single:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != model.inputs or x.shape[0] == 0:
            raise InferenceError(
                f"{model.name} takes rows of {model.inputs} features, got an array of shape {np.shape(features)}"
            )
        request = Request(self, model, x, single, owner, callback)
        batch = self._open.get(id(model))
        if batch is not None and batch.rows + len(x) > self.max_batch:
            self._close(model)
            batch = None
        if batch is None:
            batch = self._open[id(model)] = _Batch(model)
            batch.timer = self.kernel.loop.call_later(
                self.window_ns, self._window_ended, batch, owner=self.kernel
            )
        batch.requests.append(request)
        batch.rows += len(x)
        if batch.rows >= self.max_batch:
            self._close(model)
        return request

    def flush(self, model: Model | None = None) -> None:
        """Close and run the open batch of `model` (of every model with None)."""
        models = [model] if model is not None else [b.model for b in self._open.values()]
        for m in models:
            if id(m) in self._open:
                self._close(m)

    def _window_ended(self, batch: _Batch) -> None:
        if self._open.get(id(batch.model)) is batch and not self.kernel.halted:
            self._close(batch.model)

    def _close(self, model: Model) -> None:
        batch = self._open.pop(id(model))
        if batch.timer is not None:
            batch.timer.cancel()
        self.run_batch(model, batch.requests)

    def run_batch(self, model: Model, requests: list[Request]) -> None:
        x = requests[0].x if len(requests) == 1 else np.concatenate([r.x for r in requests])
        rows = len(x)
        kind, why = self.policy.choose(model, rows)
        now = self.kernel.loop.now_ns
        try:
            y, cost_ns = self.backends[kind].run(model, x, now)
        except Exception as exc:  # a device error: the CPU always works
            if kind == "cpu":
                raise
            self.kernel.log.warning(
                "mlaas", "inference fell back to cpu", backend=kind, error=repr(exc)
            )
            kind, why = "cpu", f"{kind}-failed"
            y, cost_ns = self.backends["cpu"].run(model, x, now)
        self.policy.observe(kind, model, rows, cost_ns)
        self.totals["batches"] += 1
        self.totals["rows"] += rows
        self.totals[f"{kind}_ns"] = self.totals.get(f"{kind}_ns", 0) + cost_ns
        if len(self.log) < 100_000:
            self.log.append((now, model.name, kind, rows, cost_ns, why))
        start = 0
        for r in requests:
            n = len(r.x)
            out = y[start : start + n]
            start += n
            r.value = out[0] if r.single else out
            r.done = True
            r.backend = kind
            r.done_ns = now + cost_ns
            r.batch_rows = rows
            if r.owner is not None:
                r.owner.account_inference(kind, cost_ns * n / rows, n)
            if r.callback is not None and self._deliver is not None:
                self.kernel.loop.call_at(r.done_ns, self._deliver_at, r, owner=self.kernel)

    def _deliver_at(self, request: Request) -> None:
        if not self.kernel.halted and self._deliver is not None:
            self._deliver(request)

    def drop_owner(self, owner: ModuleRecord) -> None:
        """Forget the unfinished requests of a module that left: nobody waits for them."""
        for key, batch in list(self._open.items()):
            batch.requests = [r for r in batch.requests if r.owner is not owner]
            batch.rows = sum(len(r.x) for r in batch.requests)
            if not batch.requests:
                if batch.timer is not None:
                    batch.timer.cancel()
                del self._open[key]

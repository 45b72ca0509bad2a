"""Small online learners for advisor modules.

Modules learn as the kernel runs, one observation at a time, inside a
callback's budget.  Two learners cover the shipped modules:

* `RecursiveLeastSquares` — exact online linear regression (with optional
  forgetting), for a handful of features: O(d^2) per update.
* `MlpTrainer` — Adam on mini-batches for a `Model` (ReLU MLP).  The module
  trains a copy of the weights and publishes them to its model with
  ``ctx.load_weights``, the same shape-checked path as weights from a file.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kernel.mlaas.inference import Model


class RecursiveLeastSquares:
    """y ≈ w·x, updated exactly after each observation (forgetting factor `lam`)."""

    def __init__(self, dim: int, lam: float = 1.0, delta: float = 100.0) -> None:
        if dim <= 0 or not 0 < lam <= 1:
            raise ValueError(f"need dim > 0 and 0 < lam <= 1, got dim={dim}, lam={lam}")
        self.w = np.zeros(dim)
        self.p = np.eye(dim) * delta
        self.lam = lam
        self.updates = 0

    def predict(self, x: Sequence[float] | np.ndarray) -> float:
        return float(self.w @ np.asarray(x, float))

    def update(self, x: Sequence[float] | np.ndarray, y: float) -> None:
        x = np.asarray(x, float)
        px = self.p @ x
        gain = px / (self.lam + x @ px)
        self.w += gain * (y - self.w @ x)
        self.p = (self.p - np.outer(gain, px)) / self.lam
        self.updates += 1


class MlpTrainer:
    """Adam on a `Model`'s weights: mean squared error for a linear output,
    cross-entropy for a sigmoid one."""

    def __init__(self, model: Model, lr: float = 1e-3, l2: float = 0.0) -> None:
        if model.output not in ("linear", "sigmoid"):
            raise ValueError(f"MlpTrainer trains linear or sigmoid outputs, not {model.output}")
        self.model = model
        self.lr = lr
        self.l2 = l2
        self.params = [p.astype(np.float64) for pair in model.weights for p in pair]
        self._m = [np.zeros_like(p) for p in self.params]
        self._v = [np.zeros_like(p) for p in self.params]
        self.steps = 0

    def weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The trained weights, as `Model.load_weights` takes them."""
        return [
            (self.params[i].astype(np.float32), self.params[i + 1].astype(np.float32))
            for i in range(0, len(self.params), 2)
        ]

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One Adam step on a mini-batch; returns the loss before the step."""
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64).reshape(len(x), -1)
        acts = [x]
        n_layers = len(self.params) // 2
        h = x
        for i in range(n_layers):
            h = h @ self.params[2 * i] + self.params[2 * i + 1]
            if i < n_layers - 1:
                h = np.maximum(h, 0.0)
            acts.append(h)
        out = acts[-1]
        if self.model.output == "sigmoid":
            p = 1.0 / (1.0 + np.exp(-out))
            eps = 1e-7
            loss = float(-np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)))
            delta = (p - y) / len(x)
        else:
            loss = float(np.mean((out - y) ** 2))
            delta = 2.0 * (out - y) / len(x)
        grads = [np.empty(0)] * len(self.params)
        for i in range(n_layers - 1, -1, -1):
            grads[2 * i] = acts[i].T @ delta + self.l2 * self.params[2 * i]
            grads[2 * i + 1] = delta.sum(axis=0)
            if i:
                delta = (delta @ self.params[2 * i].T) * (acts[i] > 0)
        self.steps += 1
        b1, b2 = 0.9, 0.999
        for p, g, m, v in zip(self.params, grads, self._m, self._v, strict=True):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            m_hat = m / (1 - b1**self.steps)
            v_hat = v / (1 - b2**self.steps)
            p -= self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)
        return loss

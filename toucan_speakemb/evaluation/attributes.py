"""Does a generator honour an attribute? A classifier trained on real speakers judges generated ones.

:class:`AttributeClassifier` is multinomial logistic regression (features standardised on the real training
rows, L2 penalty, fitted with scipy's L-BFGS): small, deterministic, and no new dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import numpy as np


@dataclass
class AttributeClassifier:
    classes: List[str]
    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray  # (d, c)
    bias: np.ndarray     # (c,)

    @classmethod
    def fit(cls, x: np.ndarray, labels: Sequence[str], l2: float = 1e-2) -> "AttributeClassifier":
        """Fit on rows ``x`` (n, d) with their ``labels``; rows labelled "" (unknown) are left out."""
        labels = np.asarray(labels).astype(str)
        keep = labels != ""
        x, labels = np.asarray(x, np.float64)[keep], labels[keep]
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise ValueError(f"an attribute classifier needs at least two classes; got {classes}")
        y = np.searchsorted(classes, labels)
        mean, std = x.mean(0), x.std(0) + 1e-8
        xs = (x - mean) / std
        onehot = np.eye(len(classes))[y]
        d, c = x.shape[1], len(classes)

        def loss_and_grad(theta):
            w, b = theta[: d * c].reshape(d, c), theta[d * c:]
            z = xs @ w + b
            z = z - z.max(1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(1, keepdims=True))
            g = (np.exp(logp) - onehot) / len(xs)
            loss = -np.mean(np.sum(onehot * logp, 1)) + 0.5 * l2 * np.sum(w * w)
            return loss, np.concatenate([(xs.T @ g + l2 * w).ravel(), g.sum(0)])

        from scipy.optimize import minimize

        res = minimize(loss_and_grad, np.zeros(d * c + c), jac=True, method="L-BFGS-B", options={"maxiter": 2000})
        return cls(classes, mean, std, res.x[: d * c].reshape(d, c), res.x[d * c:])

    def proba(self, x: np.ndarray) -> np.ndarray:
        """(n, classes) class probabilities."""
        return _softmax(((np.asarray(x, np.float64) - self.mean) / self.std) @ self.weights + self.bias)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.classes)[self.proba(x).argmax(1)]

    def share(self, x: np.ndarray, value: str) -> float:
        """Share of rows assigned to ``value``."""
        return float(np.mean(self.predict(x) == value))

    def accuracy(self, x: np.ndarray, labels: Sequence[str]) -> float:
        labels = np.asarray(labels).astype(str)
        keep = labels != ""
        return float(np.mean(self.predict(np.asarray(x)[keep]) == labels[keep]))

    def logit(self, x: np.ndarray, value: str) -> np.ndarray:
        """log p(value) - log p(any other value), per row: a continuous attribute score."""
        p = np.clip(self.proba(x), 1e-12, 1)
        i = self.classes.index(value)
        return np.log(p[:, i]) - np.log(np.clip(1 - p[:, i], 1e-12, 1))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)

"""Per-dimension standardisation of embeddings, stored with the model.

Embedding dimensions differ in scale by orders of magnitude (ECAPA vs x-vector parts of the 704 space;
GE2E dimensions that are almost always 0), and the diffusion's N(0, I) prior only matches data of unit
scale. Dimensions that are (nearly) constant get a floor on their std so they map to ~0, not to ±inf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class Standardizer:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, weights: Optional[np.ndarray] = None, min_std: float = 1e-4,
            enabled: bool = True) -> "Standardizer":
        x = np.asarray(x, dtype=np.float64)
        d = x.shape[1]
        if not enabled:
            return cls(np.zeros(d, np.float32), np.ones(d, np.float32))
        w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64)
        w = w / w.sum()
        mean = w @ x
        std = np.sqrt(w @ (x - mean) ** 2)
        return cls(mean.astype(np.float32), np.maximum(std, min_std).astype(np.float32))

    def forward(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float32) - self.mean) / self.std).astype(np.float32)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return (np.asarray(z, dtype=np.float32) * self.std + self.mean).astype(np.float32)

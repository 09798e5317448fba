"""Data transforms between embedding space and the unit-scale space the diffusion works in.

Stored with the model and undone after sampling:

- ``standard``: per-dimension standardisation. Embedding dimensions differ in scale by orders of magnitude
  (ECAPA vs x-vector parts of the 704 space), and the diffusion's N(0, I) prior only fits data of unit scale.
  Dimensions that are (nearly) constant get a floor on their std so they map to ~0, not to ±inf.
- ``quantile``: each dimension is first mapped through its empirical distribution function onto a standard
  normal (a Gaussian-copula marginal transform, as TabDDPM does for tabular features; Kotelnikov et al.
  2023), then standardised. Its inverse is the empirical quantile function, so every generated value lies in
  the range that dimension takes in the training data: encoders whose outputs are non-negative (ReLU before
  the embedding layer, e.g. GE2E) or bounded keep that property, and point masses (dimensions that are often
  exactly 0) are reproduced as point masses. It changes marginals only; the joint structure (correlations,
  speakers) is left to the diffusion model.
- ``radial`` (optional, before either of them): the vector's length is mapped through the empirical
  distribution of training lengths onto a wide normal around the mean length, its direction is kept. Its
  inverse gives every generated vector a length inside the training range. It matters for encoders whose
  vectors have a nearly fixed length (L2-normalised utterances: their speaker means all lie in a thin shell),
  where a small error of the model in length would otherwise leave that shell. Scaling by a positive factor
  keeps signs, so it composes with ``quantile``.
- ``polar`` (optional, instead of ``radial``): a vector is split into its direction x/|x| and its length;
  the direction goes through ``standard``/``quantile`` as above (d values) and the length through its own
  empirical distribution onto a normal (one more value), so the model works on d + 1 values. The inverse
  rescales the direction the model generates to the length it generates: lengths stay inside the training
  range and, with ``quantile``, entries keep their signs. Unlike ``radial``, the length is a coordinate of
  its own instead of a factor on every dimension, so a model's small errors in the direction do not move
  the length. For encoders whose vectors have a nearly fixed length (GE2E's speaker means: non-negative,
  lengths within a few per cent).
- ``clip`` (optional, after all of them): every generated value is clipped to the range its dimension takes in
  the training rows. With ``standard`` it gives what ``quantile`` gives by construction: encoders whose
  outputs are non-negative (GE2E's ReLU) or bounded keep that property, while the model works in a space
  where the joint Gaussian structure is not bent by per-dimension CDFs (docs/benchmarks.md: on GE2E's
  population the quantile transform costs Fréchet distance).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
from scipy.special import ndtr, ndtri

TRANSFORMS = ("standard", "quantile")


@dataclass
class Standardizer:
    mean: np.ndarray
    std: np.ndarray
    # (k, d) sorted quantile values of each dimension at levels (i + 0.5) / k; None for kind "standard"
    quantiles: Optional[np.ndarray] = None
    # (k,) sorted quantiles of the vector lengths for the radial transform; None when it is off
    radii: Optional[np.ndarray] = None
    # (k,) sorted quantiles of the vector lengths for the polar transform (the model then sees d + 1
    # values: the direction's d and the length's score last); None when it is off
    lengths: Optional[np.ndarray] = None
    # (2, d) each dimension's least and greatest training value, which generated values are clipped to;
    # None when clipping is off
    bounds: Optional[np.ndarray] = None

    @property
    def kind(self) -> str:
        return "standard" if self.quantiles is None else "quantile"

    @property
    def dim(self) -> int:
        """Dimension of the data vectors."""
        return len(self.mean) - (self.lengths is not None)

    @property
    def model_dim(self) -> int:
        """Dimension of the vectors the model works on (``dim`` + 1 with the polar transform)."""
        return len(self.mean)

    @classmethod
    def fit(cls, x: np.ndarray, weights: Optional[np.ndarray] = None, min_std: float = 1e-4,
            enabled: bool = True, kind: str = "standard", n_quantiles: int = 1000,
            radial: bool = False, polar: bool = False, clip: bool = False) -> "Standardizer":
        x = np.asarray(x, dtype=np.float64)
        d = x.shape[1]
        bounds = np.stack([x.min(axis=0), x.max(axis=0)]).astype(np.float32) if clip else None
        if not enabled:
            return cls(np.zeros(d, np.float32), np.ones(d, np.float32), bounds=bounds)
        if kind not in TRANSFORMS:
            raise ValueError(f"unknown transform '{kind}' (known: {', '.join(TRANSFORMS)})")
        if radial and polar:
            raise ValueError("radial and polar transforms exclude each other")
        radii = lengths = length_scores = None
        if polar:
            norms = np.linalg.norm(x, axis=1)
            lengths = _length_quantiles(norms, weights, n_quantiles)
            length_scores = _to_normal(norms[:, None], lengths[:, None])
            x = x / np.maximum(norms[:, None], 1e-12)
        if radial:
            radii = _length_quantiles(np.linalg.norm(x, axis=1), weights, n_quantiles)
            x = _radial_forward(x, radii)
        q = None
        if kind == "quantile":
            k = min(n_quantiles, len(x))
            levels = _levels(k)
            if weights is None:
                q = np.quantile(x, levels, axis=0, method="inverted_cdf" if k == len(x) else "linear")
            else:
                q = _weighted_quantiles(x, np.asarray(weights, dtype=np.float64), levels)
            q = np.maximum.accumulate(q, axis=0).astype(np.float32)
            x = _to_normal(x, q)
        if polar:
            x = np.concatenate([x, length_scores], axis=1)
        w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64)
        w = w / w.sum()
        mean = w @ x
        std = np.sqrt(w @ (x - mean) ** 2)
        return cls(mean.astype(np.float32), np.maximum(std, min_std).astype(np.float32), q, radii, lengths, bounds)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.radii is not None:
            x = _radial_forward(x, self.radii)
        if self.lengths is not None:
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            scores = _to_normal(norms, self.lengths[:, None])
            x = x / np.maximum(norms, 1e-12)
        if self.quantiles is not None:
            x = _to_normal(x, self.quantiles)
        if self.lengths is not None:
            x = np.concatenate([x, scores], axis=1)
        return ((x - self.mean) / self.std).astype(np.float32)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        x = np.asarray(z, dtype=np.float64) * self.std + self.mean
        if self.lengths is not None:
            x, scores = x[:, :-1], x[:, -1:]
        if self.quantiles is not None:
            x = _from_normal(x, self.quantiles)
        if self.lengths is not None:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) * _from_normal(scores, self.lengths[:, None])
        if self.radii is not None:
            x = _radial_inverse(x, self.radii)
        if self.bounds is not None:
            x = np.clip(x, self.bounds[0], self.bounds[1])
        return x.astype(np.float32)

    def to_arrays(self, prefix: str = "norm.") -> Dict[str, np.ndarray]:
        out = {f"{prefix}mean": self.mean, f"{prefix}std": self.std}
        if self.quantiles is not None:
            out[f"{prefix}quantiles"] = self.quantiles
        if self.radii is not None:
            out[f"{prefix}radii"] = self.radii
        if self.lengths is not None:
            out[f"{prefix}lengths"] = self.lengths
        if self.bounds is not None:
            out[f"{prefix}bounds"] = self.bounds
        return out

    @classmethod
    def from_arrays(cls, arrays: Dict[str, np.ndarray], prefix: str = "norm.") -> "Standardizer":
        return cls(arrays[f"{prefix}mean"], arrays[f"{prefix}std"], arrays.get(f"{prefix}quantiles"),
                   arrays.get(f"{prefix}radii"), arrays.get(f"{prefix}lengths"), arrays.get(f"{prefix}bounds"))

    def same_as(self, other: "Standardizer") -> bool:
        """The same statistics: the same arrays stored (which parts are on), each equal."""
        mine, theirs = self.to_arrays(), other.to_arrays()
        return mine.keys() == theirs.keys() and all(np.array_equal(mine[k], theirs[k]) for k in mine)


def _length_quantiles(norms: np.ndarray, weights: Optional[np.ndarray], n_quantiles: int) -> np.ndarray:
    """Sorted quantiles of the vector lengths (weighted when rows have weights), float32."""
    levels = _levels(min(n_quantiles, len(norms)))
    q = (np.quantile(norms, levels) if weights is None else
         _weighted_quantiles(norms[:, None], np.asarray(weights, np.float64), levels)[:, 0])
    return q.astype(np.float32)


def _levels(k: int) -> np.ndarray:
    return (np.arange(k) + 0.5) / k


def _to_normal(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Empirical CDF per dimension (ties get the middle of their level range), then Φ⁻¹."""
    k = len(q)
    p = _levels(k)
    out = np.empty_like(x, dtype=np.float64)
    for j in range(x.shape[1]):
        qj = q[:, j].astype(np.float64)
        up = np.interp(x[:, j], qj, p)
        # the same interpolation from the top: at a run of tied values, up gives the run's last level and
        # down its first, so their mean is the run's middle
        down = 1.0 - np.interp(-x[:, j], -qj[::-1], p)
        out[:, j] = 0.5 * (up + down)
    return ndtri(np.clip(out, p[0], p[-1]))


def _from_normal(z: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Φ, then the empirical quantile function per dimension: values stay inside the training range."""
    p = _levels(len(q))
    u = ndtr(z)
    out = np.empty_like(z, dtype=np.float64)
    for j in range(z.shape[1]):
        out[:, j] = np.interp(u[:, j], p, q[:, j].astype(np.float64))
    return out


RADIAL_SPREAD = 0.2  # std of the transformed length, relative to the mean length


def _radial_forward(x: np.ndarray, radii: np.ndarray) -> np.ndarray:
    r = np.linalg.norm(x, axis=1, keepdims=True)
    u = _to_normal(r, radii[:, None])
    centre = float(np.mean(radii))
    return x / np.maximum(r, 1e-12) * centre * (1 + RADIAL_SPREAD * u)


def _radial_inverse(y: np.ndarray, radii: np.ndarray) -> np.ndarray:
    rho = np.linalg.norm(y, axis=1, keepdims=True)
    centre = float(np.mean(radii))
    r = _from_normal((rho / centre - 1) / RADIAL_SPREAD, radii[:, None])
    return y / np.maximum(rho, 1e-12) * r


def _weighted_quantiles(x: np.ndarray, w: np.ndarray, levels: np.ndarray) -> np.ndarray:
    w = w / w.sum()
    out = np.empty((len(levels), x.shape[1]))
    for j in range(x.shape[1]):
        order = np.argsort(x[:, j], kind="stable")
        cw = np.cumsum(w[order]) - 0.5 * w[order]
        out[:, j] = np.interp(levels, cw, x[order, j])
    return out

"""Baselines every report shows beside a generator: what plain statistics and plain copying achieve.

- ``gaussian``: a full-covariance Gaussian fitted to the training vectors — the bar a generator must beat.
- ``gmm``: a Gaussian mixture (size and covariance form chosen by BIC) in the principal subspace of the training vectors,
  with the remaining directions drawn from their own variances; it can follow clusters a single Gaussian
  blurs.
- ``kde``: kernel density: a training vector plus Gaussian noise of ``bandwidth`` times the training
  covariance's standard deviations (Silverman 1986; the kernel's covariance is bandwidth² × the data's).
- ``interpolation``: a point between a training vector and one of its ``neighbours`` nearest (cosine), at a
  mixing weight drawn uniformly in [0, ``mixing``] (0.5: up to the midpoint) — the mixup of Zhang et al. 2018
  applied to speakers.
- ``resample``: training vectors drawn with replacement — the memorising upper bound on fidelity: perfect
  precision, no new voice at all.

Each takes the training vectors of the level being compared (speaker means by default) and returns ``n``
float32 rows; the same seed gives the same rows. Each but ``resample`` has a *novelty knob* (``KNOBS``): the
larger it is, the farther its vectors lie from the training ones (``scale``: the Gaussians' standard
deviations, within each component for the mixture). Precision means something only at equal novelty, so
comparisons set each knob where the baseline is as novel as real unseen speakers
(toucan_speakemb/evaluation/matched.py).
"""

from __future__ import annotations

import importlib
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.core.threads import cpu_threads


def gaussian_fit(train: np.ndarray, n: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """Samples of ``N(mean, scale² cov)`` of ``train`` (``ddof=1``)."""
    x = np.asarray(train, dtype=np.float64)
    mu = x.mean(0)
    z = np.random.default_rng(seed).standard_normal((n, len(x)))
    return (mu + scale * (z @ _centred(x, mu))).astype(np.float32)


def _centred(x: np.ndarray, mu: np.ndarray) -> np.ndarray:
    # z @ this is N(0, cov) through the centred data, so a rank-deficient covariance (fewer rows than
    # dimensions) is exact
    return (x - mu) / np.sqrt(max(len(x) - 1, 1))


def kernel_density(train: np.ndarray, n: int, seed: int = 0, bandwidth: float = 0.2) -> np.ndarray:
    """Samples of a Gaussian kernel density on ``train``: a training row drawn at random plus
    ``N(0, bandwidth² cov)``."""
    x = np.asarray(train, dtype=np.float64)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(x), n)
    z = rng.standard_normal((n, len(x)))
    return (x[pick] + bandwidth * (z @ _centred(x, x.mean(0)))).astype(np.float32)


def interpolation(train: np.ndarray, n: int, seed: int = 0, mixing: float = 0.5, neighbours: int = 5) -> np.ndarray:
    """Points between a random training row and one of its ``neighbours`` nearest (cosine) others, at a
    weight drawn uniformly in [0, ``mixing``] towards the neighbour."""
    x = np.asarray(train, dtype=np.float64)
    if len(x) < 2:
        raise SpeakEmbError("interpolation baseline: needs at least 2 training rows")
    k = int(min(max(1, neighbours), len(x) - 1))
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(x), n)
    u = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sims = u[pick] @ u.T
    sims[np.arange(n), pick] = -np.inf
    near = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    other = near[np.arange(n), rng.integers(0, k, n)]
    w = rng.uniform(0.0, mixing, n)[:, None]
    return ((1 - w) * x[pick] + w * x[other]).astype(np.float32)


def _pca(x: np.ndarray):
    mu = x.mean(0)
    _, s, vt = np.linalg.svd(x - mu, full_matrices=False)
    var = s ** 2 / max(len(x) - 1, 1)
    return mu, vt, var


def gaussian_mixture(train: np.ndarray, n: int, seed: int = 0, scale: float = 1.0, max_components: int = 16,
                     explained: float = 0.95, max_dims: int = 32) -> np.ndarray:
    """Samples of a Gaussian mixture fitted in the principal subspace of ``train`` (:func:`fit_mixture`)."""
    return fit_mixture(train, seed, max_components, explained, max_dims)(n, seed, scale)


def fit_mixture(train: np.ndarray, seed: int = 0, max_components: int = 16, explained: float = 0.95,
                max_dims: int = 32) -> Callable[[int, int, float], np.ndarray]:
    """A Gaussian mixture fitted in the principal subspace of ``train``, as a sampler ``(n, seed, scale)``
    (fitted once, sampled at many knob settings).

    The subspace keeps the leading principal directions that explain ``explained`` of the variance (at most
    ``max_dims``, and at most a quarter as many as there are rows: clusters show in the leading directions,
    and EM in hundreds of dimensions costs minutes); the number of components (1, 2, 4, ..., ``max_components``) and the
    covariance form (one covariance shared by all components, or a full one each where there are two rows
    per parameter of the mean) are chosen by BIC (Schwarz 1978), fitted by EM (scikit-learn's GaussianMixture).
    Directions outside the subspace are drawn independently with their own variances (principal components
    are uncorrelated), so the total variance is the training data's (at ``scale`` 1).
    """
    x = np.asarray(train, dtype=np.float64)
    mu, vt, var = _pca(x)
    share = np.cumsum(var) / var.sum()
    q = int(np.searchsorted(share, explained) + 1)
    q = max(1, min(q, max_dims, len(x) // 4, len(var)))
    # not whitened: k-means initialisation finds clusters by Euclidean distance, which whitening would drown
    # in the many low-variance directions
    z = (x - mu) @ vt[:q].T
    reg = 1e-3 * float(var[:q].mean())
    importlib.import_module("sklearn.mixture")  # loaded before the limit: a pool first loaded inside is not limited
    with cpu_threads(1):  # EM on small matrices: many BLAS threads only fight each other (20x slower)
        best = _fit_by_bic(z, q, reg, max_components, seed)
    if best is None:
        raise SpeakEmbError(f"Gaussian mixture baseline: {len(x)} training rows are too few to fit")

    def sample(n: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
        best.random_state = seed
        zs, comp = best.sample(n)
        zs = best.means_[comp] + scale * (zs - best.means_[comp])
        zs = zs[np.random.default_rng(seed).permutation(n)]  # sklearn returns rows grouped by component
        out = mu + zs @ vt[:q]
        rest = var[q:]
        if len(rest):
            eps = scale * np.random.default_rng(seed + 1).standard_normal((n, len(rest))) * np.sqrt(rest)
            out = out + eps @ vt[q:]
        return out.astype(np.float32)

    return sample


def _fit_by_bic(z: np.ndarray, q: int, reg: float, max_components: int, seed: int):
    from sklearn.mixture import GaussianMixture

    best, best_bic = None, np.inf
    for kind in ("tied", "full"):  # one shared covariance costs far fewer parameters in many dimensions
        c, kind_bic = 1, np.inf
        while c <= max_components and (kind == "tied" or len(z) >= 2 * q * c) and len(z) >= 2 * c:
            gm = GaussianMixture(c, covariance_type=kind, reg_covar=reg, n_init=1, random_state=seed).fit(z)
            bic = gm.bic(z)
            if bic < best_bic:
                best, best_bic = gm, bic
            if bic >= kind_bic:  # more components stopped paying for themselves
                break
            kind_bic = bic
            c *= 2
    return best


def resample_training(train: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Training rows drawn with replacement: copies, the memorising upper bound on fidelity."""
    x = np.asarray(train)
    return x[np.random.default_rng(seed).integers(0, len(x), n)].astype(np.float32)


BASELINES: Dict[str, Callable[..., np.ndarray]] = {
    "gaussian": gaussian_fit,
    "gmm": gaussian_mixture,
    "kde": kernel_density,
    "interpolation": interpolation,
    "resample": resample_training,
}

LABELS = {"gaussian": "Gaussian fit", "gmm": "Gaussian mixture", "kde": "kernel density",
          "interpolation": "interpolation of neighbours", "resample": "resampled training (copies)"}

# each baseline's novelty knob: (name, default, the range a search for a novelty may cover)
KNOBS: Dict[str, Tuple[str, float, Tuple[float, float]]] = {
    "gaussian": ("scale", 1.0, (0.05, 1.5)),
    "gmm": ("scale", 1.0, (0.05, 1.5)),
    "kde": ("bandwidth", 0.2, (0.0, 1.5)),
    "interpolation": ("mixing", 0.5, (0.0, 0.5)),  # beyond 0.5 it nears the neighbour again
}


def sample_baseline(name: str, train: np.ndarray, n: int, seed: int = 0, knob: Optional[float] = None) -> np.ndarray:
    """``n`` rows of baseline ``name`` fitted to ``train``, its novelty knob at ``knob`` (None: the default)."""
    if name not in BASELINES:
        raise SpeakEmbError(f"unknown baseline '{name}' (choose from {', '.join(BASELINES)})")
    if knob is None or name not in KNOBS:
        return BASELINES[name](train, n, seed)
    return BASELINES[name](train, n, seed, **{KNOBS[name][0]: float(knob)})

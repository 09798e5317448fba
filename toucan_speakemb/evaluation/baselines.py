"""Baselines every report shows beside a generator: what plain statistics and plain copying achieve.

- ``gaussian``: a full-covariance Gaussian fitted to the training vectors — the bar a generator must beat.
- ``gmm``: a Gaussian mixture (size and covariance form chosen by BIC) in the principal subspace of the training vectors,
  with the remaining directions drawn from their own variances; it can follow clusters a single Gaussian
  blurs.
- ``resample``: training vectors drawn with replacement — the memorising upper bound on fidelity: perfect
  precision, no new voice at all.

Each takes the training vectors of the level being compared (speaker means by default) and returns ``n``
float32 rows; the same seed gives the same rows.
"""

from __future__ import annotations

from typing import Callable, Dict

import numpy as np

from toucan_speakemb.core.errors import SpeakEmbError


def gaussian_fit(train: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Samples of ``N(mean, cov)`` of ``train`` (``ddof=1``)."""
    x = np.asarray(train, dtype=np.float64)
    mu = x.mean(0)
    # through the centred data, so a rank-deficient covariance (fewer rows than dimensions) is exact
    c = (x - mu) / np.sqrt(max(len(x) - 1, 1))
    z = np.random.default_rng(seed).standard_normal((n, len(x)))
    return (mu + z @ c).astype(np.float32)


def _pca(x: np.ndarray):
    mu = x.mean(0)
    _, s, vt = np.linalg.svd(x - mu, full_matrices=False)
    var = s ** 2 / max(len(x) - 1, 1)
    return mu, vt, var


def gaussian_mixture(train: np.ndarray, n: int, seed: int = 0, max_components: int = 16,
                     explained: float = 0.95, max_dims: int = 32) -> np.ndarray:
    """Samples of a Gaussian mixture fitted in the principal subspace of ``train``.

    The subspace keeps the leading principal directions that explain ``explained`` of the variance (at most
    ``max_dims``, and at most a quarter as many as there are rows: clusters show in the leading directions,
    and EM in hundreds of dimensions costs minutes); the number of components (1, 2, 4, ..., ``max_components``) and the
    covariance form (one covariance shared by all components, or a full one each where there are two rows
    per parameter of the mean) are chosen by BIC (Schwarz 1978), fitted by EM (scikit-learn's GaussianMixture).
    Directions outside the subspace are drawn independently with their own variances (principal components
    are uncorrelated), so the total variance is the training data's.
    """
    from threadpoolctl import threadpool_limits

    x = np.asarray(train, dtype=np.float64)
    mu, vt, var = _pca(x)
    share = np.cumsum(var) / var.sum()
    q = int(np.searchsorted(share, explained) + 1)
    q = max(1, min(q, max_dims, len(x) // 4, len(var)))
    # not whitened: k-means initialisation finds clusters by Euclidean distance, which whitening would drown
    # in the many low-variance directions
    z = (x - mu) @ vt[:q].T
    reg = 1e-3 * float(var[:q].mean())
    with threadpool_limits(1):  # EM on small matrices: many BLAS threads only fight each other (20x slower)
        best = _fit_by_bic(z, q, reg, max_components, seed)
    if best is None:
        raise SpeakEmbError(f"Gaussian mixture baseline: {len(x)} training rows are too few to fit")
    best.random_state = seed
    zs, _ = best.sample(n)
    zs = zs[np.random.default_rng(seed).permutation(n)]  # sklearn returns rows grouped by component
    out = mu + zs @ vt[:q]
    rest = var[q:]
    if len(rest):
        eps = np.random.default_rng(seed + 1).standard_normal((n, len(rest))) * np.sqrt(rest)
        out = out + eps @ vt[q:]
    return out.astype(np.float32)


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


BASELINES: Dict[str, Callable[[np.ndarray, int, int], np.ndarray]] = {
    "gaussian": gaussian_fit,
    "gmm": gaussian_mixture,
    "resample": resample_training,
}

LABELS = {"gaussian": "Gaussian fit", "gmm": "Gaussian mixture", "resample": "resampled training (copies)"}

"""How many principal directions the network models: chosen by held-out probabilistic-PCA likelihood.

A probabilistic PCA with k components (Tipping & Bishop 1999) is N(μ, V_k Λ_k V_kᵀ + σ²(I - V_k V_kᵀ)), with
σ² the mean of the d - k remaining eigenvalues. Fitted on part of the training rows and scored on the rest
(K folds), its log-likelihood rises while the added directions carry structure and falls once they only
carry scatter (whose variances are then better pooled into σ²). The k with the best held-out likelihood is
where the denoising network's subspace ends; the rest is left to the Gaussian part (its own variances, or
pooled into isotropic scatter with ``model.subspace_rest: isotropic``; see
:class:`toucan_speakemb.diffusion.denoisers.GaussianResidual`). Only training rows are used.
"""

from __future__ import annotations

import numpy as np


def ppca_heldout_loglik(fit: np.ndarray, test: np.ndarray, max_k: int) -> np.ndarray:
    """Mean log-density of ``test`` rows under the PPCA of ``fit`` with k = 0..max_k components (k + 1 values)."""
    fit = np.asarray(fit, np.float64)
    test = np.asarray(test, np.float64)
    n, d = fit.shape
    mu = fit.mean(0)
    # eigen-decomposition through the SVD of the centred rows: exact also when n < d
    _, s, vt = np.linalg.svd(fit - mu, full_matrices=False)
    lam = s**2 / max(n - 1, 1)
    max_k = min(max_k, len(lam), d - 1)
    c = (test - mu) @ vt[:max_k].T                     # principal coordinates of the test rows
    total_sq = np.sum((test - mu) ** 2, axis=1)
    total_var = float(np.sum(lam))                     # = trace of the fitted covariance
    out = np.empty(max_k + 1)
    for k in range(max_k + 1):
        rest_var = max(total_var - float(np.sum(lam[:k])), 1e-12 * total_var) / (d - k)
        maha = np.sum(c[:, :k] ** 2 / lam[:k], axis=1) + (total_sq - np.sum(c[:, :k] ** 2, axis=1)) / rest_var
        logdet = float(np.sum(np.log(lam[:k]))) + (d - k) * np.log(rest_var)
        out[k] = float(np.mean(-0.5 * (maha + logdet + d * np.log(2 * np.pi))))
    return out


def choose_subspace_dims(x: np.ndarray, folds: int = 5, seed: int = 0, max_k: int | None = None) -> int:
    """The number of principal directions (at least 1) whose PPCA has the best K-fold held-out likelihood."""
    x = np.asarray(x, np.float64)
    n, d = x.shape
    if n < 2 * folds:
        folds = max(2, n // 2)
    order = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(order, folds)
    limit = min(d - 1, n - n // folds - 2) if max_k is None else min(max_k, d - 1)
    limit = max(limit, 1)
    total = np.zeros(limit + 1)
    for i in range(folds):
        test = x[parts[i]]
        fit = x[np.concatenate([p for j, p in enumerate(parts) if j != i])]
        ll = ppca_heldout_loglik(fit, test, limit)
        total[: len(ll)] += ll
        total[len(ll):] = -np.inf
    return int(max(1, np.argmax(total)))

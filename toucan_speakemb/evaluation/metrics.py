"""Metrics for comparing generated speaker embeddings with real ones.

Every function takes arrays (anything ``numpy.asarray`` accepts, rows are
embeddings) and returns plain Python numbers, tuples, arrays or dicts. There is
no file I/O and no plotting here. All arithmetic is done in float64.

Every k-NN or pairwise computation is *chunked*: rows are processed in blocks
of ``chunk_size`` against blocks of ``chunk_size`` rows of the other set, so at
most a ``chunk_size x chunk_size`` matrix exists at any time (for example
20 000 x 5 000 embeddings of 704 dimensions never build an n x n matrix).
Squared Euclidean distances use ``|a-b|^2 = |a|^2 + |b|^2 - 2 a.b`` with one
matrix product per block; negative round-off results are clipped to 0.

Conventions:

* "cosine" is the cosine similarity ``a.b / (|a| |b|)``; all-zero rows are
  rejected because their cosine is undefined.
* Covariances and variances use ``ddof=1`` (unbiased sample estimates).
* Invalid input (wrong shape, mismatched dimensions, NaN/inf, too few rows)
  raises ``ValueError`` with one sentence saying what is wrong.
"""

from __future__ import annotations

import numbers
from typing import Iterator

import numpy as np

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "knn_radii",
    "knn_sq_radii",
    "frechet_distance",
    "frechet_distance_from_stats",
    "precision_recall",
    "inside_real_balls",
    "density_coverage",
    "knn_measures",
    "cosine_similarity_matrix_max",
    "eer_threshold",
    "same_speaker_threshold",
    "split_half_threshold",
    "memorised_share",
    "close_pair_share",
    "total_variance_ratio",
    "effective_voice_count",
    "mean_variance_differences",
    "constraint_share",
]

#: Default number of rows per block in chunked computations.
DEFAULT_CHUNK_SIZE = 2048

# Number of index pairs whose cosine is computed at once in pair-list scoring.
_PAIR_BLOCK = 16384


# --------------------------------------------------------------------------- #
# validation helpers
# --------------------------------------------------------------------------- #
def _as_matrix(X, name: str, min_rows: int = 1) -> np.ndarray:
    """Return ``X`` as a finite float64 matrix with at least ``min_rows`` rows."""
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n_rows, n_dims), got shape {arr.shape}.")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one dimension (column), got shape {arr.shape}.")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} row(s), got {arr.shape[0]}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return arr


def _as_vector(x, name: str) -> np.ndarray:
    """Return ``x`` as a non-empty finite float64 vector."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return arr


def _check_same_dim(A: np.ndarray, B: np.ndarray, name_a: str, name_b: str) -> None:
    if A.shape[1] != B.shape[1]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same number of dimensions, "
            f"got {A.shape[1]} and {B.shape[1]}."
        )


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _check_knn_rows(X: np.ndarray, k: int, name: str) -> None:
    if X.shape[0] < k + 1:
        raise ValueError(
            f"{name} needs at least k + 1 = {k + 1} rows for k = {k} nearest neighbours, got {X.shape[0]}."
        )


def _check_finite_number(value, name: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}.") from None
    if not np.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    return out


def _check_speaker_ids(speaker_ids, n_rows: int) -> np.ndarray:
    ids = np.asarray(speaker_ids)
    if ids.ndim != 1 or ids.shape[0] != n_rows:
        raise ValueError(
            f"speaker_ids must be a 1-D sequence with one id per row of X ({n_rows}), got shape {ids.shape}."
        )
    return ids


def _normalize_rows(X: np.ndarray, name: str) -> np.ndarray:
    """Return a new array with every row scaled to unit L2 norm."""
    norms = np.linalg.norm(X, axis=1)
    if np.any(norms == 0.0):
        raise ValueError(f"{name} contains an all-zero row, for which cosine similarity is undefined.")
    return X / norms[:, None]


# --------------------------------------------------------------------------- #
# chunking helpers
# --------------------------------------------------------------------------- #
def _blocks(n: int, chunk_size: int) -> Iterator[tuple[int, int]]:
    """Yield ``(start, stop)`` row ranges of at most ``chunk_size`` rows covering ``range(n)``."""
    for start in range(0, n, chunk_size):
        yield start, min(start + chunk_size, n)


def _sq_norms(X: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", X, X)


def _sq_dists_block(a: np.ndarray, a2: np.ndarray, b: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of two blocks, ``|a|^2 + |b|^2 - 2ab`` clipped at 0."""
    d = a @ b.T
    d *= -2.0
    d += a2[:, None]
    d += b2[None, :]
    np.maximum(d, 0.0, out=d)
    return d


def _knn_sq_radii(X: np.ndarray, k: int, chunk_size: int) -> np.ndarray:
    """Squared distance of each row to its k-th nearest other row (self excluded by index).

    Distances are symmetric, so each tile above the diagonal is computed once and serves the k-NN search of
    both its row block and its column block: half the matrix products of a plain double loop.
    """
    n = X.shape[0]
    x2 = _sq_norms(X)
    best = np.full((n, k), np.inf)  # running k smallest per row, unordered
    blocks = list(_blocks(n, chunk_size))
    for bi, (i0, i1) in enumerate(blocks):
        for j0, j1 in blocks[bi:]:
            d = _sq_dists_block(X[i0:i1], x2[i0:i1], X[j0:j1], x2[j0:j1])
            if i0 == j0:  # a diagonal tile: exclude self-distances
                idx = np.arange(i1 - i0)
                d[idx, idx] = np.inf
            best[i0:i1] = np.partition(np.concatenate([best[i0:i1], d], axis=1), k - 1, axis=1)[:, :k]
            if i0 != j0:
                best[j0:j1] = np.partition(np.concatenate([best[j0:j1], d.T], axis=1), k - 1, axis=1)[:, :k]
    return best.max(axis=1)


def _ball_counts(
    points: np.ndarray, centers: np.ndarray, center_sq_radii: np.ndarray, chunk_size: int, strict: bool
) -> np.ndarray:
    """For each point, the number of balls ``B(center_i, radius_i)`` containing it.

    Containment is ``dist < radius`` if ``strict`` else ``dist <= radius``.
    """
    p2 = _sq_norms(points)
    c2 = _sq_norms(centers)
    counts = np.zeros(points.shape[0], dtype=np.int64)
    for i0, i1 in _blocks(points.shape[0], chunk_size):
        for j0, j1 in _blocks(centers.shape[0], chunk_size):
            d = _sq_dists_block(points[i0:i1], p2[i0:i1], centers[j0:j1], c2[j0:j1])
            r = center_sq_radii[None, j0:j1]
            inside = d < r if strict else d <= r
            counts[i0:i1] += inside.sum(axis=1)
    return counts


def _min_sq_dists(A: np.ndarray, B: np.ndarray, chunk_size: int) -> np.ndarray:
    """For each row of ``A`` the squared distance to its nearest row of ``B``."""
    a2 = _sq_norms(A)
    b2 = _sq_norms(B)
    out = np.full(A.shape[0], np.inf)
    for i0, i1 in _blocks(A.shape[0], chunk_size):
        for j0, j1 in _blocks(B.shape[0], chunk_size):
            d = _sq_dists_block(A[i0:i1], a2[i0:i1], B[j0:j1], b2[j0:j1])
            np.minimum(out[i0:i1], d.min(axis=1), out=out[i0:i1])
    return out


def _max_cosine_normalized(
    An: np.ndarray, Bn: np.ndarray, chunk_size: int, exclude_self: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Running max/argmax of ``An @ Bn.T`` over column blocks (rows already unit-norm)."""
    n = An.shape[0]
    best = np.full(n, -np.inf)
    best_idx = np.zeros(n, dtype=np.int64)
    for i0, i1 in _blocks(n, chunk_size):
        for j0, j1 in _blocks(Bn.shape[0], chunk_size):
            s = An[i0:i1] @ Bn[j0:j1].T
            if exclude_self:
                lo, hi = max(i0, j0), min(i1, j1)
                if lo < hi:
                    idx = np.arange(lo, hi)
                    s[idx - i0, idx - j0] = -np.inf
            local = s.argmax(axis=1)
            vals = s[np.arange(i1 - i0), local]
            better = vals > best[i0:i1]
            best[i0:i1] = np.where(better, vals, best[i0:i1])
            best_idx[i0:i1] = np.where(better, local + j0, best_idx[i0:i1])
    return best, best_idx


def _pair_cosines(Xn: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Cosines ``Xn[i[t]] . Xn[j[t]]`` for index lists, computed in blocks (rows unit-norm)."""
    out = np.empty(i.shape[0])
    for s0, s1 in _blocks(i.shape[0], _PAIR_BLOCK):
        out[s0:s1] = np.einsum("ij,ij->i", Xn[i[s0:s1]], Xn[j[s0:s1]])
    return out


def _all_pair_cosines(Xn: np.ndarray, block_entries: int = 1 << 22) -> np.ndarray:
    """Cosines of every pair ``i < j`` of unit rows, in ``np.triu_indices(n, 1)`` order: blocks of rows times
    the rows after them (matrix products, a few MB at a time) instead of gathering both rows of each pair."""
    n = Xn.shape[0]
    rows = max(1, block_entries // max(n, 1))
    parts = []
    for s0, s1 in _blocks(n, rows):
        gram = Xn[s0:s1] @ Xn[s0:].T  # row r of the block is row s0 + r; column c is row s0 + c
        parts.append(gram[np.arange(s1 - s0)[:, None] < np.arange(n - s0)[None, :]])  # c > r, row by row
    return np.concatenate(parts) if parts else np.empty(0)


def _knn_inputs(real, fake, k, chunk_size, fake_needs_radii: bool):
    """Validated ``(real, fake, k, chunk_size)`` for the k-NN ball measures."""
    k = _check_positive_int(k, "k")
    chunk_size = _check_positive_int(chunk_size, "chunk_size")
    real = _as_matrix(real, "real")
    fake = _as_matrix(fake, "fake")
    _check_same_dim(real, fake, "real", "fake")
    _check_knn_rows(real, k, "real")
    if fake_needs_radii:
        _check_knn_rows(fake, k, "fake")
    return real, fake, k, chunk_size


# --------------------------------------------------------------------------- #
# k-NN radii
# --------------------------------------------------------------------------- #
def knn_sq_radii(X, k: int = 5, chunk_size: int = DEFAULT_CHUNK_SIZE) -> np.ndarray:
    """Squared :func:`knn_radii`, exactly as the ball tests use them (pass to :func:`knn_measures`)."""
    k = _check_positive_int(k, "k")
    chunk_size = _check_positive_int(chunk_size, "chunk_size")
    X = _as_matrix(X, "X")
    _check_knn_rows(X, k, "X")
    return _knn_sq_radii(X, k, chunk_size)


def knn_radii(X, k: int = 5, chunk_size: int = DEFAULT_CHUNK_SIZE) -> np.ndarray:
    """Euclidean distance of every row of ``X`` to its k-th nearest neighbour in ``X``.

    The row itself is excluded by index (not by distance), so an exact duplicate
    of a row counts as a neighbour at distance 0. These radii define the k-NN
    balls of the manifold estimates in Kynkäänniemi et al. (2019), "Improved
    Precision and Recall Metric for Assessing Generative Models", NeurIPS, and
    Naeem et al. (2020), "Reliable Fidelity and Diversity Metrics for Generative
    Models", ICML.

    Returns an array of shape ``(n_rows,)``. Needs at least ``k + 1`` rows.
    """
    return np.sqrt(knn_sq_radii(X, k, chunk_size))


# --------------------------------------------------------------------------- #
# Fréchet distance
# --------------------------------------------------------------------------- #
def _sqrt_psd(S: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative eigenvalues clipped to 0)."""
    w, V = np.linalg.eigh(S)
    return (V * np.sqrt(np.clip(w, 0.0, None))) @ V.T


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between two Gaussians given their means and covariances.

    ``d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})``, the squared
    2-Wasserstein distance between ``N(mu1, S1)`` and ``N(mu2, S2)`` (Dowson &
    Landau 1982), used as "FID" by Heusel et al. (2017), "GANs Trained by a Two
    Time-Scale Update Rule Converge to a Local Nash Equilibrium", NeurIPS.

    ``Tr((S1 S2)^{1/2})`` is computed as the sum of square roots of the
    eigenvalues of the symmetric PSD matrix ``S1^{1/2} S2 S1^{1/2}`` (which has
    the same eigenvalues as ``S1 S2``); tiny negative eigenvalues from round-off
    are clipped to 0. This avoids ``scipy.linalg.sqrtm`` on a non-symmetric
    product. Covariances are symmetrised as ``(S + S.T) / 2`` first. The result
    is clipped at 0 to remove round-off below zero.
    """
    mu1 = _as_vector(mu1, "mu1")
    mu2 = _as_vector(mu2, "mu2")
    s1 = np.asarray(sigma1, dtype=np.float64)
    s2 = np.asarray(sigma2, dtype=np.float64)
    d = mu1.shape[0]
    if mu2.shape[0] != d:
        raise ValueError(f"mu1 and mu2 must have the same length, got {d} and {mu2.shape[0]}.")
    for name, s in (("sigma1", s1), ("sigma2", s2)):
        if s.shape != (d, d):
            raise ValueError(f"{name} must have shape ({d}, {d}) to match the means, got {s.shape}.")
        if not np.all(np.isfinite(s)):
            raise ValueError(f"{name} contains NaN or infinite values.")
    s1 = (s1 + s1.T) / 2.0
    s2 = (s2 + s2.T) / 2.0
    r1 = _sqrt_psd(s1)
    m = r1 @ s2 @ r1
    m = (m + m.T) / 2.0
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh(m), 0.0, None)).sum())
    diff = mu1 - mu2
    fd = float(diff @ diff) + float(np.trace(s1)) + float(np.trace(s2)) - 2.0 * tr_sqrt
    return max(fd, 0.0)


def frechet_distance(X, Y) -> float:
    """Fréchet distance between Gaussian fits of two samples (rows are observations).

    Fits ``N(mean, cov)`` (``ddof=1``) to ``X`` and to ``Y`` and returns
    ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})``; Heusel et al. (2017),
    "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
    Equilibrium", NeurIPS. See :func:`frechet_distance_from_stats`. Note the
    estimate is biased upward for small samples. Each sample needs >= 2 rows.
    """
    X = _as_matrix(X, "X", min_rows=2)
    Y = _as_matrix(Y, "Y", min_rows=2)
    _check_same_dim(X, Y, "X", "Y")
    return frechet_distance_from_stats(
        X.mean(axis=0), np.cov(X, rowvar=False, ddof=1).reshape(X.shape[1], X.shape[1]),
        Y.mean(axis=0), np.cov(Y, rowvar=False, ddof=1).reshape(Y.shape[1], Y.shape[1]),
    )


# --------------------------------------------------------------------------- #
# precision / recall, density / coverage
# --------------------------------------------------------------------------- #
def precision_recall(real, fake, k: int = 5, chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[float, float]:
    """Improved precision and recall of Kynkäänniemi et al. (2019).

    Kynkäänniemi, Karras, Laine, Lehtinen, Aila (2019), "Improved Precision and
    Recall Metric for Assessing Generative Models", NeurIPS.

    * precision = share of fake rows inside at least one real k-NN ball, the
      ball of a real row having radius = its distance to its k-th nearest
      other real row;
    * recall = share of real rows inside at least one fake k-NN ball (radii
      from the fake set).

    "Inside" is ``distance <= radius`` as in the authors' reference code. Both
    sets need at least ``k + 1`` rows. Returns ``(precision, recall)``.
    """
    m = knn_measures(real, fake, k=k, chunk_size=chunk_size)
    return m["precision"], m["recall"]


def inside_real_balls(real, fake, k: int = 5, chunk_size: int = DEFAULT_CHUNK_SIZE) -> np.ndarray:
    """Per fake row, whether it lies inside at least one real k-NN ball: the indicator whose mean is the
    precision of :func:`precision_recall` (same radii, same ``<=``). Precision is a mean over the fake rows,
    so the precision of any subset of them (e.g. the voices of one score range) is the mean over that subset.
    Returns a bool array of shape ``(n_fake,)``."""
    real, fake, k, chunk_size = _knn_inputs(real, fake, k, chunk_size, fake_needs_radii=False)
    real_r2 = _knn_sq_radii(real, k, chunk_size)
    r2, f2 = _sq_norms(real), _sq_norms(fake)
    inside = np.zeros(fake.shape[0], dtype=bool)
    for i0, i1 in _blocks(fake.shape[0], chunk_size):
        for j0, j1 in _blocks(real.shape[0], chunk_size):
            d = _sq_dists_block(fake[i0:i1], f2[i0:i1], real[j0:j1], r2[j0:j1])
            inside[i0:i1] |= (d <= real_r2[None, j0:j1]).any(axis=1)
    return inside


def density_coverage(real, fake, k: int = 5, chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[float, float]:
    """Density and coverage of Naeem et al. (2020).

    Naeem, Oh, Uh, Choi, Yoo (2020), "Reliable Fidelity and Diversity Metrics
    for Generative Models", ICML. With ``B_i`` the k-NN ball of real row ``i``
    (radius = distance to its k-th nearest other real row), ``N`` real and
    ``M`` fake rows:

    * density  = ``1/(k M) * sum_j sum_i 1[fake_j in B_i]`` (can exceed 1);
    * coverage = ``1/N * sum_i 1[exists j: fake_j in B_i]``, i.e. the share of
      real rows whose nearest fake row lies inside their own ball.

    "Inside" is the strict ``distance < radius`` as in the authors' reference
    code. ``real`` needs at least ``k + 1`` rows. Returns ``(density, coverage)``.
    """
    real, fake, k, chunk_size = _knn_inputs(real, fake, k, chunk_size, fake_needs_radii=False)
    real_r2 = _knn_sq_radii(real, k, chunk_size)
    counts = _ball_counts(fake, real, real_r2, chunk_size, strict=True)
    density = float(counts.sum() / (k * fake.shape[0]))
    coverage = float(np.mean(_min_sq_dists(real, fake, chunk_size) < real_r2))
    return density, coverage


def knn_measures(real, fake, k: int = 5, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 real_sq_radii=None) -> dict:
    """Precision, recall, density and coverage in one pass over the fake x real distances.

    The same four numbers as :func:`precision_recall` and :func:`density_coverage`
    (same definitions, same boundary conventions), but every fake-real distance
    block is computed once and the real k-NN radii can be passed in
    (``real_sq_radii``, as returned by :func:`knn_sq_radii`), so that several
    generated sets compared with one large real set pay for the real set's k-NN
    search only once. The radii are passed *squared* (:func:`knn_sq_radii`):
    a square root and back would move exact ties across the strict ``<`` of
    density and coverage. Returns ``{"precision", "recall", "density", "coverage"}``.
    """
    real, fake, k, chunk_size = _knn_inputs(real, fake, k, chunk_size, fake_needs_radii=True)
    if real_sq_radii is None:
        real_r2 = _knn_sq_radii(real, k, chunk_size)
    else:
        real_r2 = np.asarray(real_sq_radii, dtype=np.float64)
        if real_r2.shape != (real.shape[0],):
            raise ValueError(f"real_sq_radii must have one entry per real row ({real.shape[0]}), "
                             f"got shape {real_r2.shape}.")
    fake_r2 = _knn_sq_radii(fake, k, chunk_size)
    r2, f2 = _sq_norms(real), _sq_norms(fake)
    in_some_real_ball = np.zeros(fake.shape[0], dtype=bool)   # precision (<=)
    strict_counts = np.zeros(fake.shape[0], dtype=np.int64)   # density (<)
    in_some_fake_ball = np.zeros(real.shape[0], dtype=bool)   # recall (<=)
    nearest_fake = np.full(real.shape[0], np.inf)              # coverage
    for i0, i1 in _blocks(fake.shape[0], chunk_size):
        for j0, j1 in _blocks(real.shape[0], chunk_size):
            d = _sq_dists_block(fake[i0:i1], f2[i0:i1], real[j0:j1], r2[j0:j1])
            rr = real_r2[None, j0:j1]
            in_some_real_ball[i0:i1] |= (d <= rr).any(axis=1)
            strict_counts[i0:i1] += (d < rr).sum(axis=1)
            in_some_fake_ball[j0:j1] |= (d <= fake_r2[i0:i1, None]).any(axis=0)
            np.minimum(nearest_fake[j0:j1], d.min(axis=0), out=nearest_fake[j0:j1])
    return {
        "precision": float(np.mean(in_some_real_ball)),
        "recall": float(np.mean(in_some_fake_ball)),
        "density": float(strict_counts.sum() / (k * fake.shape[0])),
        "coverage": float(np.mean(nearest_fake < real_r2)),
    }


# --------------------------------------------------------------------------- #
# cosine-based novelty / memorisation
# --------------------------------------------------------------------------- #
def cosine_similarity_matrix_max(
    A, B, chunk_size: int = DEFAULT_CHUNK_SIZE, exclude_self: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``A``, the largest cosine similarity to any row of ``B`` and its index.

    ``max_j cos(A_i, B_j)`` with ``cos(a, b) = a.b / (|a| |b|)``, the usual
    nearest-neighbour novelty/memorisation check for generated samples (e.g.
    nearest-training-sample analysis as in Meehan, Chaudhuri, Dasgupta (2020),
    "A Non-Parametric Test to Detect Data-Copying in Generative Models",
    AISTATS). Used here to find the nearest training speaker.

    With ``exclude_self=True``, ``A`` and ``B`` are taken to be the same set
    (same number of rows) and the pair ``(i, i)`` is ignored; ``B`` then needs
    at least 2 rows. Returns ``(max_similarities, argmax_indices)``, arrays of
    length ``len(A)``; ties go to the lowest index.
    """
    chunk_size = _check_positive_int(chunk_size, "chunk_size")
    A = _as_matrix(A, "A")
    B = _as_matrix(B, "B")
    _check_same_dim(A, B, "A", "B")
    if exclude_self:
        if A.shape[0] != B.shape[0]:
            raise ValueError(
                f"exclude_self=True needs A and B to be the same set, got {A.shape[0]} and {B.shape[0]} rows."
            )
        if B.shape[0] < 2:
            raise ValueError(
                "exclude_self=True needs at least 2 rows, so that each row has another row to compare with."
            )
    An = _normalize_rows(A, "A")
    Bn = An if B is A else _normalize_rows(B, "B")
    return _max_cosine_normalized(An, Bn, chunk_size, exclude_self)


def memorised_share(generated, train, threshold: float, chunk_size: int = DEFAULT_CHUNK_SIZE) -> float:
    """Share of generated rows whose maximum cosine similarity to any training row is ``> threshold``.

    ``1/M * sum_j 1[max_i cos(g_j, t_i) > threshold]``; a nearest-neighbour
    copy detector in the spirit of Meehan et al. (2020), "A Non-Parametric Test
    to Detect Data-Copying in Generative Models", AISTATS. A natural threshold
    is the same-speaker threshold of :func:`same_speaker_threshold` (or of
    :func:`split_half_threshold` when comparing speaker means).
    """
    threshold = _check_finite_number(threshold, "threshold")
    best, _ = cosine_similarity_matrix_max(generated, train, chunk_size=chunk_size)
    return float(np.mean(best > threshold))


def close_pair_share(X, threshold: float, chunk_size: int = DEFAULT_CHUNK_SIZE) -> float:
    """Share of unordered pairs ``i < j`` of rows of ``X`` with cosine similarity ``> threshold``.

    ``2 / (n (n-1)) * #{i < j : cos(X_i, X_j) > threshold}``, counted exactly in
    blocks. With a same-speaker threshold this is the share of pairs of
    generated voices that would be judged to be the same speaker, a
    mode-collapse indicator (cf. the "birthday paradox" test, Arora & Zhang
    (2017), "Do GANs actually learn the distribution? An empirical study").
    Needs at least 2 rows.
    """
    threshold = _check_finite_number(threshold, "threshold")
    chunk_size = _check_positive_int(chunk_size, "chunk_size")
    X = _as_matrix(X, "X", min_rows=2)
    Xn = _normalize_rows(X, "X")
    n = Xn.shape[0]
    count = 0
    for i0, i1 in _blocks(n, chunk_size):
        for j0, j1 in _blocks(n, chunk_size):
            if j1 <= i0 + 1:  # every column index <= every row index: no pair with i < j
                continue
            mask = (Xn[i0:i1] @ Xn[j0:j1].T) > threshold
            if j0 < i1:  # tile may hold pairs with j <= i: keep only j > i
                mask &= np.arange(j0, j1)[None, :] > np.arange(i0, i1)[:, None]
            count += int(mask.sum())
    return count / (n * (n - 1) / 2)


def effective_voice_count(X, threshold: float, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Number of effectively different voices in ``X`` by greedy cosine clustering.

    Rows are visited in order; a row becomes a new representative ("voice") if
    its cosine similarity to every representative kept so far is
    ``<= threshold``, otherwise it is absorbed. The count of representatives is
    returned. This is the greedy leader / sequential clustering algorithm
    (the "leader algorithm" of Hartigan (1975), "Clustering Algorithms", Wiley); the
    result depends on row order and every kept pair of representatives has
    cosine ``<= threshold``. With a same-speaker threshold it estimates how many
    distinguishable speakers a generated set contains.

    Computed exactly in blocks: a block is first checked against the kept
    representatives with matrix products, then the remaining rows are resolved
    sequentially within the block.
    """
    threshold = _check_finite_number(threshold, "threshold")
    chunk_size = _check_positive_int(chunk_size, "chunk_size")
    X = _as_matrix(X, "X")
    Xn = _normalize_rows(X, "X")
    reps = np.empty_like(Xn)
    n_reps = 0
    for i0, i1 in _blocks(Xn.shape[0], chunk_size):
        block = Xn[i0:i1]
        covered = np.zeros(i1 - i0, dtype=bool)
        for r0, r1 in _blocks(n_reps, chunk_size):
            covered |= ((block @ reps[r0:r1].T) > threshold).any(axis=1)
        cand = block[~covered]
        if cand.shape[0] == 0:
            continue
        close = (cand @ cand.T) > threshold
        absorbed = np.zeros(cand.shape[0], dtype=bool)
        for t in range(cand.shape[0]):
            if absorbed[t]:
                continue
            reps[n_reps] = cand[t]
            n_reps += 1
            absorbed |= close[t]
    return n_reps


# --------------------------------------------------------------------------- #
# verification thresholds
# --------------------------------------------------------------------------- #
def eer_threshold(same_scores, diff_scores) -> tuple[float, float]:
    """Equal error rate and its threshold for similarity scores (accept if ``score >= threshold``).

    For a threshold ``t``: false-accept rate ``FAR(t)`` = share of
    different-speaker scores ``>= t``, false-reject rate ``FRR(t)`` = share of
    same-speaker scores ``< t``. Every distinct observed score is tried as
    ``t``; the one minimising ``|FAR - FRR|`` is returned with
    ``eer = (FAR + FRR) / 2`` there (ties go to the lowest threshold). The EER
    is the standard speaker-verification operating point, see e.g. the NIST
    SRE evaluation plans and Bimbot et al. (2004), "A Tutorial on
    Text-Independent Speaker Verification", EURASIP JASP.

    Returns ``(threshold, eer)``.
    """
    same = np.sort(_as_vector(same_scores, "same_scores"))
    diff = np.sort(_as_vector(diff_scores, "diff_scores"))
    cand = np.unique(np.concatenate([same, diff]))
    far = (diff.shape[0] - np.searchsorted(diff, cand, side="left")) / diff.shape[0]
    frr = np.searchsorted(same, cand, side="left") / same.shape[0]
    idx = int(np.argmin(np.abs(far - frr)))
    return float(cand[idx]), float((far[idx] + frr[idx]) / 2.0)


def _group_by_speaker(speaker_ids: np.ndarray):
    """Return ``(order, counts, starts)``: rows sorted by speaker, rows per speaker, block starts."""
    _, inverse = np.unique(speaker_ids, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return order, counts, starts


def same_speaker_threshold(X, speaker_ids, max_pairs: int = 200_000, seed: int = 0) -> tuple[float, float]:
    """Cosine same-speaker threshold of a labelled embedding set, as the EER point of a verification trial list.

    * same-speaker scores: cosine of every unordered pair of different rows
      with the same speaker id; if there are more than ``max_pairs`` such
      pairs, ``max_pairs`` of them are drawn without replacement;
    * different-speaker scores: cosine of every unordered pair of rows with
      different ids if there are at most ``max_pairs`` of them, otherwise
      ``max_pairs`` pairs drawn uniformly with replacement.

    Sampling uses ``numpy.random.default_rng(seed)``. Returns
    :func:`eer_threshold` of these scores, ``(threshold, eer)``: cosines above
    the threshold are "same speaker" at the equal-error operating point
    (Bimbot et al. (2004), "A Tutorial on Text-Independent Speaker
    Verification", EURASIP JASP).
    """
    max_pairs = _check_positive_int(max_pairs, "max_pairs")
    X = _as_matrix(X, "X")
    ids = _check_speaker_ids(speaker_ids, X.shape[0])
    order, counts, starts = _group_by_speaker(ids)
    if counts.max() < 2:
        raise ValueError("No speaker has at least 2 rows, so there are no same-speaker pairs.")
    if counts.shape[0] < 2:
        raise ValueError("speaker_ids must contain at least 2 different speakers to form different-speaker pairs.")
    Xn = _normalize_rows(X, "X")
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    n_spk = counts.shape[0]

    # Same-speaker pairs. In grouped order, position p (local index l in its
    # speaker block of size c) pairs with the c-1-l later positions of its block;
    # flat pair index m maps to (p, p + 1 + m - offset[p]).
    spk_of_pos = np.repeat(np.arange(n_spk), counts)
    local = np.arange(n) - starts[spk_of_pos]
    row_counts = counts[spk_of_pos] - 1 - local
    pos_nz = np.flatnonzero(row_counts > 0)
    rc_nz = row_counts[pos_nz]
    offsets = np.cumsum(rc_nz) - rc_nz
    total_same = int(rc_nz.sum())
    if total_same <= max_pairs:
        m = np.arange(total_same)
    else:
        m = np.sort(rng.choice(total_same, size=max_pairs, replace=False))
    k = np.searchsorted(offsets, m, side="right") - 1
    i_pos = pos_nz[k]
    j_pos = i_pos + 1 + (m - offsets[k])
    same = _pair_cosines(Xn, order[i_pos], order[j_pos])

    # Different-speaker pairs.
    total_diff = (n * n - int((counts.astype(np.int64) ** 2).sum())) // 2
    if total_diff <= max_pairs:
        i_parts, j_parts = [], []
        for s in range(n_spk):
            a = np.arange(starts[s], starts[s] + counts[s])
            b = np.arange(starts[s] + counts[s], n)
            i_parts.append(np.repeat(a, b.shape[0]))
            j_parts.append(np.tile(b, a.shape[0]))
        i_pos = np.concatenate(i_parts)
        j_pos = np.concatenate(j_parts)
    else:
        # Uniform over ordered different-speaker pairs: p(i) proportional to the
        # number of rows of other speakers, then j uniform among those rows.
        weights = (n - counts[spk_of_pos]).astype(np.float64)
        i_pos = rng.choice(n, size=max_pairs, p=weights / weights.sum())
        s_i = spk_of_pos[i_pos]
        u = rng.integers(0, n - counts[s_i])
        j_pos = np.where(u < starts[s_i], u, u + counts[s_i])
    diff = _pair_cosines(Xn, order[i_pos], order[j_pos])
    return eer_threshold(same, diff)


def split_half_threshold(X, speaker_ids, seed: int = 0) -> tuple[float, float]:
    """Cosine same-speaker threshold at the level of speaker *means*.

    Only speakers with at least 2 rows are used. For each, its rows are
    shuffled (``numpy.random.default_rng(seed)``) and split into two halves
    (the second half gets the extra row when the count is odd):

    * same-speaker scores: cosine between the means of the two halves;
    * different-speaker scores: cosine between the full means (of raw rows) of
      every pair of different speakers.

    Returns :func:`eer_threshold` of these scores, ``(threshold, eer)``. This is
    the threshold to use when comparing speaker means (e.g. generated voices
    against training-speaker centroids), since averaging makes embeddings of
    one speaker more similar than single utterances are. The split-half
    reliability idea follows Spearman (1910) / Brown (1910), British Journal of
    Psychology 3; the EER point follows Bimbot et al. (2004), EURASIP JASP.
    All ``S(S-1)/2`` speaker pairs are scored (S = eligible speakers).
    """
    X = _as_matrix(X, "X")
    ids = _check_speaker_ids(speaker_ids, X.shape[0])
    order, counts, starts = _group_by_speaker(ids)
    eligible = np.flatnonzero(counts >= 2)
    if eligible.shape[0] < 2:
        raise ValueError(
            f"split_half_threshold needs at least 2 speakers with at least 2 rows each, got {eligible.shape[0]}."
        )
    rng = np.random.default_rng(seed)
    d = X.shape[1]
    half_a = np.empty((eligible.shape[0], d))
    half_b = np.empty((eligible.shape[0], d))
    means = np.empty((eligible.shape[0], d))
    for t, s in enumerate(eligible):
        rows = order[starts[s]:starts[s] + counts[s]]
        perm = rng.permutation(rows)
        h = perm.shape[0] // 2
        half_a[t] = X[perm[:h]].mean(axis=0)
        half_b[t] = X[perm[h:]].mean(axis=0)
        means[t] = X[rows].mean(axis=0)
    a_n = _normalize_rows(half_a, "the half-means of X")
    b_n = _normalize_rows(half_b, "the half-means of X")
    same = np.einsum("ij,ij->i", a_n, b_n)
    m_n = _normalize_rows(means, "the speaker means of X")
    diff = _all_pair_cosines(m_n)
    return eer_threshold(same, diff)


# --------------------------------------------------------------------------- #
# moment and constraint checks
# --------------------------------------------------------------------------- #
def total_variance_ratio(generated, real) -> float:
    """Ratio of total variances ``Tr(Cov(generated)) / Tr(Cov(real))`` (``ddof=1``).

    The trace of the covariance (sum of per-dimension variances) is the total
    variance of a multivariate sample (Anderson (2003), "An Introduction to
    Multivariate Statistical Analysis", 3rd ed.); a ratio well below 1 points to
    a generator that under-disperses (mode collapse), above 1 to over-dispersion.
    Each set needs at least 2 rows, and ``real`` must have non-zero variance.
    """
    generated = _as_matrix(generated, "generated", min_rows=2)
    real = _as_matrix(real, "real", min_rows=2)
    _check_same_dim(generated, real, "generated", "real")
    tr_real = float(np.var(real, axis=0, ddof=1).sum())
    if tr_real == 0.0:
        raise ValueError("real has zero total variance, so the ratio is undefined.")
    return float(np.var(generated, axis=0, ddof=1).sum()) / tr_real


def mean_variance_differences(real, generated, eps: float = 1e-12) -> dict:
    """Per-dimension comparison of first and second moments of real and generated embeddings.

    Returns a dict with:

    * ``"mean_abs_mean_difference"``: ``mean_d |mean_real[d] - mean_gen[d]|`` (float);
    * ``"mean_abs_variance_difference"``: ``mean_d |var_real[d] - var_gen[d]|`` (float);
    * ``"mean_ratio"``: array ``mean_gen[d] / mean_real[d]``, where a real mean
      with ``|mean_real[d]| < eps`` is replaced by ``eps`` with its sign (``+eps`` for 0);
    * ``"variance_ratio"``: array ``var_gen[d] / max(var_real[d], eps)``.

    Variances use ``ddof=1``; each set needs at least 2 rows. These are the
    moment-matching measures of the source presentation; they are simple
    marginal checks, cf. the first/second-moment terms of the Fréchet distance
    (Heusel et al. 2017, NeurIPS).
    """
    eps = _check_finite_number(eps, "eps")
    if eps <= 0.0:
        raise ValueError(f"eps must be positive, got {eps!r}.")
    real = _as_matrix(real, "real", min_rows=2)
    generated = _as_matrix(generated, "generated", min_rows=2)
    _check_same_dim(real, generated, "real", "generated")
    m_r, m_g = real.mean(axis=0), generated.mean(axis=0)
    v_r, v_g = real.var(axis=0, ddof=1), generated.var(axis=0, ddof=1)
    denom_m = np.where(np.abs(m_r) < eps, np.where(m_r < 0, -eps, eps), m_r)
    return {
        "mean_abs_mean_difference": float(np.mean(np.abs(m_r - m_g))),
        "mean_abs_variance_difference": float(np.mean(np.abs(v_r - v_g))),
        "mean_ratio": m_g / denom_m,
        "variance_ratio": v_g / np.maximum(v_r, eps),
    }


def constraint_share(X, min_entry: float | None = None, norm_range: tuple[float, float] | None = None) -> float:
    """Share of rows of ``X`` that satisfy all given constraints.

    ``1/n * #{i : (min_entry is None or min_d X[i, d] >= min_entry) and
    (norm_range is None or lo <= |X_i|_2 <= hi)}``; bounds are inclusive.
    With no constraint given every row passes (returns 1.0). Useful for checks
    such as "embeddings are non-negative" (e.g. after a ReLU) or "norms lie in
    the range seen in training"; a plain validity rate of generated samples.
    """
    X = _as_matrix(X, "X")
    ok = np.ones(X.shape[0], dtype=bool)
    if min_entry is not None:
        min_entry = _check_finite_number(min_entry, "min_entry")
        ok &= X.min(axis=1) >= min_entry
    if norm_range is not None:
        try:
            lo, hi = norm_range
        except (TypeError, ValueError):
            raise ValueError(f"norm_range must be a pair (lo, hi), got {norm_range!r}.") from None
        lo = _check_finite_number(lo, "norm_range[0]")
        hi = _check_finite_number(hi, "norm_range[1]")
        if lo > hi:
            raise ValueError(f"norm_range must satisfy lo <= hi, got ({lo}, {hi}).")
        norms = np.linalg.norm(X, axis=1)
        ok &= (norms >= lo) & (norms <= hi)
    return float(np.mean(ok))

"""Specification tests for toucan_speakemb.evaluation.metrics.

Chunked implementations are checked against direct brute-force computations
(full distance / cosine matrices built here in the tests), the closed-form
measures against analytic values, and the rest against hand computations.
"""

import numpy as np
import pytest
from scipy.linalg import sqrtm
from scipy.spatial.distance import cdist
from scipy.stats import norm

from toucan_speakemb.evaluation.metrics import (
    close_pair_share,
    constraint_share,
    cosine_similarity_matrix_max,
    density_coverage,
    eer_threshold,
    effective_voice_count,
    frechet_distance,
    frechet_distance_from_stats,
    inside_real_balls,
    knn_radii,
    mean_variance_differences,
    memorised_share,
    precision_recall,
    same_speaker_threshold,
    split_half_threshold,
    total_variance_ratio,
)

# chunk sizes: 1, sizes that do not divide the row counts, and one larger than all inputs
CHUNK_SIZES = [1, 3, 7, 16, 1000]


# --------------------------------------------------------------------------- #
# brute-force references (full matrices, fine for small data)
# --------------------------------------------------------------------------- #
def brute_knn_radii(X, k):
    d = cdist(X, X)
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, k - 1]


def brute_precision_recall(real, fake, k):
    r_real = brute_knn_radii(real, k)
    r_fake = brute_knn_radii(fake, k)
    d = cdist(fake, real)  # (fake, real)
    precision = np.mean((d <= r_real[None, :]).any(axis=1))
    recall = np.mean((d.T <= r_fake[None, :]).any(axis=1))
    return precision, recall


def brute_density_coverage(real, fake, k):
    r_real = brute_knn_radii(real, k)
    d = cdist(real, fake)  # (real, fake)
    density = (d < r_real[:, None]).sum() / (k * fake.shape[0])
    coverage = np.mean(d.min(axis=1) < r_real)
    return density, coverage


def unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def brute_cosine(A, B):
    return unit(A) @ unit(B).T


def brute_greedy_voices(X, threshold):
    reps = []
    for x in unit(X):
        if all(float(x @ r) <= threshold for r in reps):
            reps.append(x)
    return len(reps)


def brute_all_pair_scores(X, ids):
    ids = np.asarray(ids)
    c = brute_cosine(X, X)
    iu, ju = np.triu_indices(len(X), k=1)
    same = ids[iu] == ids[ju]
    return c[iu, ju][same], c[iu, ju][~same]


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# --------------------------------------------------------------------------- #
# chunked == brute force
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
@pytest.mark.parametrize("k", [1, 3])
def test_knn_radii_chunked_equals_brute_force(rng, chunk_size, k):
    X = rng.normal(size=(23, 5))
    got = knn_radii(X, k=k, chunk_size=chunk_size)
    np.testing.assert_allclose(got, brute_knn_radii(X, k), rtol=1e-9, atol=1e-9)


def test_knn_radii_excludes_the_row_itself_but_counts_exact_duplicates():
    X = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    np.testing.assert_allclose(knn_radii(X, k=1, chunk_size=3), [0.0, 0.0, 5.0, 5.0], atol=1e-12)
    np.testing.assert_allclose(knn_radii(X, k=2, chunk_size=1), [5.0, 5.0, 5.0, 10.0], atol=1e-12)


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_precision_recall_chunked_equals_brute_force(rng, chunk_size):
    real = rng.normal(size=(31, 4))
    fake = rng.normal(loc=0.5, scale=1.3, size=(19, 4))
    got = precision_recall(real, fake, k=3, chunk_size=chunk_size)
    assert got == pytest.approx(brute_precision_recall(real, fake, 3), abs=1e-12)


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_inside_real_balls_is_the_per_row_indicator_whose_mean_is_precision(rng, chunk_size):
    real = rng.normal(size=(31, 4))
    fake = rng.normal(loc=0.5, scale=1.3, size=(19, 4))
    inside = inside_real_balls(real, fake, k=3, chunk_size=chunk_size)
    assert inside.shape == (19,) and inside.dtype == bool
    assert inside.mean() == pytest.approx(brute_precision_recall(real, fake, 3)[0], abs=1e-12)
    d = cdist(fake, real, "sqeuclidean")
    radii = np.sort(cdist(real, real, "sqeuclidean"), axis=1)[:, 3]
    np.testing.assert_array_equal(inside, (d <= radii[None, :]).any(axis=1))
    # a single fake row is enough (no radii of the fake set are needed)
    assert inside_real_balls(real, fake[:1], k=3).tolist() == inside[:1].tolist()


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_density_coverage_chunked_equals_brute_force(rng, chunk_size):
    real = rng.normal(size=(29, 4))
    fake = rng.normal(loc=0.3, scale=0.8, size=(17, 4))
    got = density_coverage(real, fake, k=4, chunk_size=chunk_size)
    assert got == pytest.approx(brute_density_coverage(real, fake, 4), abs=1e-12)


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_cosine_max_chunked_equals_brute_force(rng, chunk_size):
    A = rng.normal(size=(21, 6))
    B = rng.normal(size=(13, 6))
    sims, idx = cosine_similarity_matrix_max(A, B, chunk_size=chunk_size)
    c = brute_cosine(A, B)
    np.testing.assert_allclose(sims, c.max(axis=1), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(idx, c.argmax(axis=1))


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_cosine_max_exclude_self_ignores_the_diagonal(rng, chunk_size):
    A = rng.normal(size=(22, 6))
    sims, idx = cosine_similarity_matrix_max(A, A, chunk_size=chunk_size, exclude_self=True)
    c = brute_cosine(A, A)
    np.fill_diagonal(c, -np.inf)
    np.testing.assert_allclose(sims, c.max(axis=1), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(idx, c.argmax(axis=1))
    assert np.all(idx != np.arange(len(A)))
    # without exclusion every row finds itself with cosine 1
    sims_self, idx_self = cosine_similarity_matrix_max(A, A, chunk_size=chunk_size)
    np.testing.assert_allclose(sims_self, 1.0, atol=1e-12)
    np.testing.assert_array_equal(idx_self, np.arange(len(A)))


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
@pytest.mark.parametrize("threshold", [-0.2, 0.0, 0.3])
def test_close_pair_share_chunked_equals_brute_force(rng, chunk_size, threshold):
    X = rng.normal(size=(26, 3))
    c = brute_cosine(X, X)
    iu, ju = np.triu_indices(len(X), k=1)
    expected = np.mean(c[iu, ju] > threshold)
    assert close_pair_share(X, threshold, chunk_size=chunk_size) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.9])
def test_effective_voice_count_chunked_equals_naive_greedy(rng, chunk_size, threshold):
    X = rng.normal(size=(40, 3))
    assert effective_voice_count(X, threshold, chunk_size=chunk_size) == brute_greedy_voices(X, threshold)


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_memorised_share_chunked_equals_brute_force(rng, chunk_size):
    gen = rng.normal(size=(25, 4))
    train = rng.normal(size=(14, 4))
    expected = np.mean(brute_cosine(gen, train).max(axis=1) > 0.6)
    assert memorised_share(gen, train, 0.6, chunk_size=chunk_size) == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------- #
# Fréchet distance
# --------------------------------------------------------------------------- #
def test_frechet_distance_from_stats_diagonal_covariances_is_sum_of_squared_sqrt_differences():
    a = np.array([1.0, 4.0, 0.25, 9.0, 2.0])
    b = np.array([4.0, 1.0, 0.25, 0.0, 3.0])
    mu1 = np.array([0.0, 1.0, -2.0, 0.5, 0.0])
    mu2 = np.array([1.0, 1.0, 0.0, 0.5, -1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance_from_stats(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_frechet_distance_from_stats_matches_sqrtm_formula_for_general_covariances(rng):
    d = 6
    A = rng.normal(size=(d, d))
    B = rng.normal(size=(d, d))
    s1 = A @ A.T + 0.1 * np.eye(d)
    s2 = B @ B.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * sqrtm(s1 @ s2).real)
    assert frechet_distance_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_from_stats_is_zero_for_identical_and_symmetric(rng):
    d = 5
    A = rng.normal(size=(d, 3))  # rank-deficient covariance
    s = A @ A.T
    mu = rng.normal(size=d)
    assert frechet_distance_from_stats(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9)
    s2 = np.eye(d) * 2.0
    # singular s: eigenvalues ~1e-16 become ~1e-8 under the square root, hence rel=1e-7
    assert frechet_distance_from_stats(mu, s, mu + 1, s2) == pytest.approx(
        frechet_distance_from_stats(mu + 1, s2, mu, s), rel=1e-7
    )


def test_frechet_distance_of_two_large_samples_from_same_gaussian_is_near_zero(rng):
    X = rng.normal(size=(20000, 8))
    Y = rng.normal(size=(20000, 8))
    assert frechet_distance(X, Y) < 0.01


def test_frechet_distance_between_unit_gaussians_equals_squared_mean_shift(rng):
    mu = np.array([0.5, -0.5, 0.5, 0.0, 0.5, 0.0, 0.0, 0.0])  # |mu|^2 = 1
    X = rng.normal(size=(20000, 8))
    Y = rng.normal(size=(20000, 8)) + mu
    # sampling s.d. of the estimate is about 2 |mu| sqrt(2 / n) = 0.02
    assert frechet_distance(X, Y) == pytest.approx(mu @ mu, abs=0.08)


def test_frechet_distance_equals_stats_version_on_sample_moments(rng):
    X = rng.normal(size=(50, 4))
    Y = 2 * rng.normal(size=(40, 4)) + 1
    expected = frechet_distance_from_stats(X.mean(0), np.cov(X.T), Y.mean(0), np.cov(Y.T))
    assert frechet_distance(X, Y) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- #
# precision / recall, density / coverage on known distributions
# --------------------------------------------------------------------------- #
def mixture(rng, n, centres, scale=0.3):
    which = rng.integers(0, len(centres), size=n)
    return centres[which] + scale * rng.normal(size=(n, centres.shape[1]))


CENTRES = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])


def test_precision_recall_of_same_distribution_is_near_one(rng):
    real = rng.normal(size=(1500, 3))
    fake = rng.normal(size=(1500, 3))
    p, r = precision_recall(real, fake, k=5, chunk_size=512)
    assert p > 0.9 and r > 0.9


def test_precision_recall_of_far_shifted_distribution_is_zero(rng):
    real = rng.normal(size=(300, 3))
    fake = rng.normal(size=(300, 3)) + 100.0
    assert precision_recall(real, fake, k=5) == (0.0, 0.0)


def test_recall_drops_when_fake_covers_half_the_real_modes_while_precision_stays_high(rng):
    real = mixture(rng, 2000, CENTRES)
    fake = mixture(rng, 2000, CENTRES[:2])
    p, r = precision_recall(real, fake, k=5, chunk_size=700)
    assert p > 0.9
    assert 0.4 < r < 0.6


def test_ball_boundary_counts_as_inside_for_precision_recall_but_not_for_density_coverage():
    # 1-D integers, so the distance identity is exact. k=1 radii of real: 1, 1, 2, 2.
    real = np.array([[0.0], [1.0], [10.0], [12.0]])
    fake = np.array([[2.0], [5.0]])  # fake 2 lies exactly on the ball boundary of real 1
    # Kynkäänniemi et al. reference code: distance <= radius
    assert precision_recall(real, fake, k=1, chunk_size=3) == (0.5, 0.5)
    # Naeem et al. reference code: distance < radius
    assert density_coverage(real, fake, k=1, chunk_size=3) == (0.0, 0.0)


def test_density_and_coverage_of_same_distribution_are_near_one(rng):
    real = rng.normal(size=(1500, 3))
    fake = rng.normal(size=(1500, 3))
    density, coverage = density_coverage(real, fake, k=5, chunk_size=512)
    assert 0.85 < density < 1.15
    assert coverage > 0.9


def test_density_and_coverage_of_far_shifted_distribution_are_zero(rng):
    real = rng.normal(size=(300, 3))
    fake = rng.normal(size=(300, 3)) + 100.0
    assert density_coverage(real, fake, k=5) == (0.0, 0.0)


def test_coverage_halves_when_fake_covers_half_the_real_modes(rng):
    real = mixture(rng, 2000, CENTRES)
    fake = mixture(rng, 2000, CENTRES[:2])
    density, coverage = density_coverage(real, fake, k=5, chunk_size=700)
    assert 0.4 < coverage < 0.6
    # density only asks how many real balls hold each fake sample: ~1 on the covered modes
    assert 0.8 < density < 1.2


# --------------------------------------------------------------------------- #
# EER and same-speaker thresholds
# --------------------------------------------------------------------------- #
def test_eer_of_separable_scores_is_zero_with_threshold_between_them():
    same = [0.8, 0.95, 0.9]
    diff = [0.1, 0.3, 0.2, 0.5]
    threshold, eer = eer_threshold(same, diff)
    assert eer == 0.0
    assert max(diff) < threshold <= min(same)


def test_eer_on_overlapping_scores_matches_hand_computation():
    # t=0.4: FAR=2/4, FRR=1/4; t=0.5: FAR=1/4, FRR=1/4 -> equal
    threshold, eer = eer_threshold([0.3, 0.5, 0.7, 0.9], [0.1, 0.2, 0.4, 0.6])
    assert threshold == 0.5
    assert eer == pytest.approx(0.25)
    # unequal sizes: t=0.4: |3/5-1/3|, t=0.5: |2/5-1/3|=1/15 (min), t=0.6: |1/5-1/3|
    threshold, eer = eer_threshold([0.35, 0.6, 0.8], [0.1, 0.3, 0.4, 0.5, 0.7])
    assert threshold == 0.5
    assert eer == pytest.approx((2 / 5 + 1 / 3) / 2)


def test_eer_of_two_unit_gaussians_two_apart_is_phi_of_minus_one(rng):
    same = rng.normal(1.0, 1.0, size=50000)
    diff = rng.normal(-1.0, 1.0, size=50000)
    threshold, eer = eer_threshold(same, diff)
    assert eer == pytest.approx(norm.cdf(-1.0), abs=0.01)
    assert threshold == pytest.approx(0.0, abs=0.05)


def test_eer_when_all_same_scores_are_below_all_diff_scores_is_one():
    threshold, eer = eer_threshold([0.1, 0.2], [0.8, 0.9])
    assert eer == 1.0


def speakers(rng, n_speakers, rows_per_speaker, dim=16, noise=0.05):
    centres = rng.normal(size=(n_speakers, dim))
    ids = np.repeat(np.arange(n_speakers), rows_per_speaker)
    X = centres[ids] + noise * rng.normal(size=(len(ids), dim))
    perm = rng.permutation(len(ids))  # rows of one speaker are not contiguous
    return X[perm], ids[perm]


def test_same_speaker_threshold_with_all_pairs_equals_eer_of_brute_force_pair_scores(rng):
    X, ids = speakers(rng, 6, [2, 3, 5, 4, 1, 7], noise=0.8)
    ids = np.array([f"spk{i}" for i in ids])  # string ids work too
    expected = eer_threshold(*brute_all_pair_scores(X, ids))
    got = same_speaker_threshold(X, ids, max_pairs=10_000)
    assert got == pytest.approx(expected, abs=1e-12)


def test_same_speaker_threshold_separates_well_separated_speakers(rng):
    X, ids = speakers(rng, 20, 10)
    threshold, eer = same_speaker_threshold(X, ids)
    same, diff = brute_all_pair_scores(X, ids)
    assert eer == 0.0
    # 1e-12: the brute-force cosines here may differ from the function's by round-off
    assert diff.max() < threshold <= same.min() + 1e-12


def test_same_speaker_threshold_subsampling_is_seeded_and_close_to_all_pairs(rng):
    X, ids = speakers(rng, 15, 12, noise=1.0)
    full = same_speaker_threshold(X, ids, max_pairs=1_000_000)
    sub = same_speaker_threshold(X, ids, max_pairs=300, seed=3)
    assert sub == same_speaker_threshold(X, ids, max_pairs=300, seed=3)
    assert sub != same_speaker_threshold(X, ids, max_pairs=300, seed=4)
    assert sub[1] == pytest.approx(full[1], abs=0.1)
    assert sub[0] == pytest.approx(full[0], abs=0.1)


def test_split_half_threshold_with_two_rows_per_speaker_matches_hand_built_scores(rng):
    X, ids = speakers(rng, 5, 2, noise=0.7)
    X = np.vstack([X, rng.normal(size=(1, 16))])  # a speaker with a single row is ignored
    ids = np.append(ids, 99)
    same, means = [], []
    for s in range(5):
        rows = X[ids == s]
        same.append(float((unit(rows[:1]) @ unit(rows[1:]).T)[0, 0]))
        means.append(rows.mean(axis=0))
    c = brute_cosine(np.array(means), np.array(means))
    diff = c[np.triu_indices(5, k=1)]
    got = split_half_threshold(X, ids, seed=7)
    assert got == pytest.approx(eer_threshold(same, diff), abs=1e-12)


def test_all_pair_cosines_are_the_upper_triangle_of_the_cosine_matrix_in_any_block_size(rng):
    from toucan_speakemb.evaluation.metrics import _all_pair_cosines

    X = rng.normal(size=(37, 5))
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    iu, ju = np.triu_indices(37, k=1)
    want = np.einsum("ij,ij->i", Xn[iu], Xn[ju])
    for block in (1, 37, 100, 1 << 22):  # one row at a time, one row of 37, a few rows, all at once
        np.testing.assert_allclose(_all_pair_cosines(Xn, block), want, rtol=0, atol=1e-12)
    assert _all_pair_cosines(Xn[:1]).shape == (0,)


def test_split_half_threshold_splits_each_speaker_into_equal_halves():
    # Each speaker: centre c plus a regular simplex orthogonal to c. Every 2+2 split
    # gives half-means c+u and c-u with |u|^2 = 0.25, so cosine (1-0.25)/(1+0.25) = 0.6
    # whatever the shuffle; a 1+3 split would give about 0.545.
    simplex = np.eye(4) - 0.25
    X = np.zeros((8, 10))
    X[:4, 0] = 1.0
    X[:4, 1:5] = simplex
    X[4:, 5] = 1.0
    X[4:, 6:10] = simplex
    ids = [0, 0, 0, 0, 1, 1, 1, 1]
    for seed in range(3):
        threshold, eer = split_half_threshold(X, ids, seed=seed)
        assert threshold == pytest.approx(0.6, abs=1e-12)
        assert eer == 0.0


def test_split_half_threshold_separates_speaker_means_and_is_seeded(rng):
    X, ids = speakers(rng, 12, 9, noise=0.3)
    threshold, eer = split_half_threshold(X, ids, seed=0)
    assert eer == 0.0
    assert (threshold, eer) == split_half_threshold(X, ids, seed=0)


# --------------------------------------------------------------------------- #
# memorisation, close pairs, voice count
# --------------------------------------------------------------------------- #
def test_memorised_share_is_one_for_copies_of_train_and_zero_for_far_away_points(rng):
    train = rng.normal(size=(200, 32)) + 3.0
    copies = train[rng.integers(0, 200, size=50)] + 1e-6 * rng.normal(size=(50, 32))
    assert memorised_share(copies, train, threshold=0.99, chunk_size=64) == 1.0
    far = -train[:50]  # opposite directions: cosine about -1
    assert memorised_share(far, train, threshold=0.5, chunk_size=64) == 0.0


def test_close_pair_share_on_hand_built_vectors():
    d = np.array([1.0, 1.0]) / np.sqrt(2.0)
    X = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], d, [-1.0, 0.0]])
    # 10 pairs; cos > 0.9 only for (e1, 2 e1)
    assert close_pair_share(X, 0.9, chunk_size=2) == pytest.approx(1 / 10)
    # cos > 0.7 also for (e1, d), (2 e1, d), (e2, d)
    assert close_pair_share(X, 0.7, chunk_size=3) == pytest.approx(4 / 10)
    assert close_pair_share(X, -1.5) == pytest.approx(1.0)


def test_effective_voice_count_on_hand_built_clusters(rng):
    directions = np.eye(4)[:3] * 5.0
    X = np.repeat(directions, 10, axis=0) + 0.01 * rng.normal(size=(30, 4))
    X = X[rng.permutation(30)]
    assert effective_voice_count(X, threshold=0.9, chunk_size=4) == 3
    assert effective_voice_count(X, threshold=0.999999999) == 30
    assert effective_voice_count(X, threshold=-1.5) == 1


def test_effective_voice_count_is_greedy_in_row_order():
    angles = np.deg2rad([0.0, 30.0, 60.0])
    X = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    thr = np.cos(np.deg2rad(45.0))
    # 0 deg kept; 30 deg absorbed (cos 30 > thr); 60 deg new (cos 60 <= thr)
    assert effective_voice_count(X, thr) == 2
    # starting from 30 deg absorbs both neighbours
    assert effective_voice_count(X[[1, 0, 2]], thr) == 1


# --------------------------------------------------------------------------- #
# moments and constraints
# --------------------------------------------------------------------------- #
def test_total_variance_ratio_of_doubled_sample_is_four(rng):
    real = rng.normal(size=(100, 5))
    assert total_variance_ratio(2.0 * real + 7.0, real) == pytest.approx(4.0, rel=1e-12)


def test_mean_variance_differences_on_hand_built_data():
    real = np.array([[0.0, 1.0, 0.0], [2.0, 3.0, 0.0]])  # means 1, 2, 0; variances 2, 2, 0
    gen = np.array([[1.0, 0.0, 1.0], [1.0, 2.0, 1.0]])  # means 1, 1, 1; variances 0, 2, 0
    out = mean_variance_differences(real, gen, eps=1e-6)
    assert out["mean_abs_mean_difference"] == pytest.approx((0 + 1 + 1) / 3)
    assert out["mean_abs_variance_difference"] == pytest.approx((2 + 0 + 0) / 3)
    np.testing.assert_allclose(out["mean_ratio"], [1.0, 0.5, 1e6])
    np.testing.assert_allclose(out["variance_ratio"], [0.0, 1.0, 0.0])


def test_constraint_share_counts_rows_keeping_all_constraints():
    X = np.array([[3.0, 4.0], [0.0, 1.0], [-0.1, 1.0], [6.0, 8.0], [0.0, 0.0]])  # norms 5, 1, ~1, 10, 0
    assert constraint_share(X) == 1.0
    assert constraint_share(X, min_entry=0.0) == pytest.approx(4 / 5)
    assert constraint_share(X, norm_range=(1.0, 5.0)) == pytest.approx(3 / 5)  # inclusive bounds
    assert constraint_share(X, min_entry=0.0, norm_range=(1.0, 5.0)) == pytest.approx(2 / 5)


# --------------------------------------------------------------------------- #
# input validation
# --------------------------------------------------------------------------- #
def test_mismatched_dimensions_raise_value_error(rng):
    a, b = rng.normal(size=(10, 3)), rng.normal(size=(10, 4))
    for call in (
        lambda: frechet_distance(a, b),
        lambda: precision_recall(a, b, k=2),
        lambda: density_coverage(a, b, k=2),
        lambda: cosine_similarity_matrix_max(a, b),
        lambda: memorised_share(a, b, 0.5),
        lambda: total_variance_ratio(a, b),
        lambda: mean_variance_differences(a, b),
    ):
        with pytest.raises(ValueError, match="same number of dimensions"):
            call()
    with pytest.raises(ValueError, match="same length"):
        frechet_distance_from_stats(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="shape"):
        frechet_distance_from_stats(np.zeros(3), np.eye(4), np.zeros(3), np.eye(3))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_input_raises_value_error(rng, bad):
    X = rng.normal(size=(10, 3))
    X[4, 1] = bad
    good = rng.normal(size=(10, 3))
    for call in (
        lambda: knn_radii(X, k=2),
        lambda: frechet_distance(good, X),
        lambda: precision_recall(good, X, k=2),
        lambda: close_pair_share(X, 0.5),
        lambda: effective_voice_count(X, 0.5),
        lambda: constraint_share(X),
        lambda: same_speaker_threshold(X, np.arange(10) // 2),
    ):
        with pytest.raises(ValueError, match="NaN or infinite"):
            call()
    with pytest.raises(ValueError, match="NaN or infinite"):
        eer_threshold([0.5, bad], [0.1])


def test_too_few_rows_for_k_nearest_neighbours_raise_value_error(rng):
    few = rng.normal(size=(5, 3))
    many = rng.normal(size=(20, 3))
    with pytest.raises(ValueError, match="at least k \\+ 1 = 6 rows"):
        knn_radii(few, k=5)
    with pytest.raises(ValueError, match="real needs at least"):
        precision_recall(few, many, k=5)
    with pytest.raises(ValueError, match="fake needs at least"):
        precision_recall(many, few, k=5)
    with pytest.raises(ValueError, match="real needs at least"):
        density_coverage(few, many, k=5)


def test_speaker_threshold_without_usable_speakers_raises_value_error(rng):
    X = rng.normal(size=(6, 4))
    with pytest.raises(ValueError, match="No speaker has at least 2 rows"):
        same_speaker_threshold(X, np.arange(6))
    with pytest.raises(ValueError, match="at least 2 different speakers"):
        same_speaker_threshold(X, np.zeros(6, dtype=int))
    with pytest.raises(ValueError, match="at least 2 speakers with at least 2 rows"):
        split_half_threshold(X, [0, 0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="one id per row"):
        same_speaker_threshold(X, [0, 0, 1])


def test_other_invalid_arguments_raise_value_error(rng):
    X = rng.normal(size=(10, 3))
    with pytest.raises(ValueError, match="2-D"):
        knn_radii(X[0], k=1)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        knn_radii(X, k=1, chunk_size=0)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        precision_recall(X, X, k=0)
    with pytest.raises(ValueError, match="all-zero row"):
        cosine_similarity_matrix_max(np.vstack([X, np.zeros(3)]), X)
    with pytest.raises(ValueError, match="same set"):
        cosine_similarity_matrix_max(X, X[:5], exclude_self=True)
    with pytest.raises(ValueError, match="lo <= hi"):
        constraint_share(X, norm_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="must not be empty"):
        eer_threshold([], [0.1])
    with pytest.raises(ValueError, match="threshold must be finite"):
        memorised_share(X, X, np.nan)
    with pytest.raises(ValueError, match="threshold must be finite"):
        effective_voice_count(X, np.inf)
    with pytest.raises(ValueError, match="zero total variance"):
        total_variance_ratio(X, np.ones((4, 3)))

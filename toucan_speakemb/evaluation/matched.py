"""Comparisons at matched novelty: precision means something only beside how far from the training speakers
a system's voices lie.

A system that copies or barely blurs training speakers (kernel density at a small bandwidth, interpolation
between neighbours) scores a high precision because its voices *are* training speakers, nearly; a system
that strays far scores a low one. So every system is read at the novelty of real speakers the model never
saw (the target point), each along its own novelty knob (the generator's temperature, a baseline's
bandwidth, scale or mixing range):

- **novelty** of a set: the distribution of each vector's cosine to its nearest training speaker (the
  data-copying view of Meehan et al. 2020; "authenticity" of Alaa et al. 2022 asks the same of each sample);
- **as novel as real speakers**: its median is within ``MEDIAN_TOLERANCE`` (0.005) of the unseen speakers'
  median, and its share above the split-half same-speaker threshold (between speaker means) is at most
  ``SHARE_TOLERANCE`` (0.05) above theirs;
- **precision and recall**: the k-NN measures of Kynkäänniemi et al. (2019) against the unseen speakers.

:func:`curve` traces a system across its knob, :func:`match_knob` finds the knob value whose novelty
median is the unseen speakers' (bisection, :func:`knob_at_median`: novelty moves one way along every knob
here), and
:func:`at_novelty` reads a curve at a novelty.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from toucan_speakemb.evaluation import metrics as M

MEDIAN_TOLERANCE = 0.005
SHARE_TOLERANCE = 0.05

REFERENCES = [
    "Alaa, van Breugel, Saveliev, van der Schaar (2022). How faithful is your synthetic data? Sample-level "
    "metrics for evaluating and auditing generative models. ICML. (authenticity)",
    "Kynkäänniemi, Karras, Laine, Lehtinen, Aila (2019). Improved precision and recall metric for assessing "
    "generative models. NeurIPS.",
    "Meehan, Chaudhuri, Dasgupta (2020). A non-parametric test to detect data-copying in generative models. "
    "AISTATS.",
]


@dataclass
class Novelty:
    """How far a set lies from the training speakers."""

    median: float        # median cosine of a vector to its nearest training speaker
    share_above: float   # share of vectors above the (split-half) same-speaker threshold of some training speaker


def novelty_of(x: np.ndarray, train: np.ndarray, threshold: float) -> Tuple[Novelty, np.ndarray]:
    """The novelty of ``x`` against ``train`` and the nearest-training cosines behind it."""
    nearest, _ = M.cosine_similarity_matrix_max(np.asarray(x, np.float64), np.asarray(train, np.float64))
    return Novelty(float(np.median(nearest)), float(np.mean(nearest > threshold))), nearest


def as_novel_as(system: Novelty, real: Novelty) -> bool:
    """The yardstick: ``system`` is as novel as the real unseen speakers ``real``."""
    return (abs(system.median - real.median) <= MEDIAN_TOLERANCE + 1e-12
            and system.share_above <= real.share_above + SHARE_TOLERANCE + 1e-12)


@dataclass
class Point:
    """One setting of a system's knob and what it scores."""

    knob: float
    novelty_median: float
    share_above: float
    precision: float
    recall: float
    frechet: Optional[float] = None  # not measured along curves (a matrix square root per point)

    def to_json(self) -> Dict[str, Optional[float]]:
        return {k: None if v is None else float(v) for k, v in asdict(self).items()}


def measure_point(x: np.ndarray, knob: float, real: np.ndarray, train: np.ndarray, threshold: float,
                  k: int = 5, real_sq_radii: Optional[np.ndarray] = None, frechet: bool = True) -> Point:
    """Novelty, precision and recall (and the Fréchet distance) of ``x`` against ``real``; ``real_sq_radii``:
    the real k-NN radii when already computed (:func:`toucan_speakemb.evaluation.metrics.knn_sq_radii`)."""
    nov, _ = novelty_of(x, train, threshold)
    m = M.knn_measures(real, x, k=k, real_sq_radii=real_sq_radii)
    return Point(float(knob), nov.median, nov.share_above, float(m["precision"]), float(m["recall"]),
                 M.frechet_distance(x, real) if frechet else None)


def curve(sample: Callable[[float], np.ndarray], knobs: Sequence[float], real: np.ndarray, train: np.ndarray,
          threshold: float, k: int = 5) -> List[Point]:
    """The system ``sample(knob) -> vectors`` at each knob value: novelty, precision and recall against
    ``real``."""
    radii = M.knn_sq_radii(real, k)
    return [measure_point(sample(float(v)), float(v), real, train, threshold, k, radii, frechet=False)
            for v in knobs]


def match_knob(sample: Callable[[float], np.ndarray], lo: float, hi: float, train: np.ndarray, target: float,
               iters: int = 12) -> Tuple[float, float, bool]:
    """The knob value in [lo, hi] whose median nearest-training cosine is ``target`` (bisection,
    :func:`knob_at_median` on the medians of ``sample(knob)``)."""
    train = np.asarray(train, np.float64)

    def median(v: float) -> float:
        nearest, _ = M.cosine_similarity_matrix_max(np.asarray(sample(v), np.float64), train)
        return float(np.median(nearest))

    return knob_at_median(median, lo, hi, target, iters)


def knob_at_median(median: Callable[[float], float], lo: float, hi: float, target: float,
                   iters: int = 12) -> Tuple[float, float, bool]:
    """The knob value in [lo, hi] at which ``median(knob)`` (a novelty median, monotone along the knob) is
    ``target``, by bisection to within a tenth of ``MEDIAN_TOLERANCE`` or ``iters`` halvings.

    Returns (knob, its median, reached). When no value in the range reaches the target, the end nearest to
    it is returned with ``reached`` False: the system cannot be that novel (or that close) along this knob.
    """
    m_lo, m_hi = median(lo), median(hi)
    if (m_lo - target) * (m_hi - target) > 0:  # the target is outside what this knob reaches
        return (lo, m_lo, False) if abs(m_lo - target) < abs(m_hi - target) else (hi, m_hi, False)
    a, b, m_a = lo, hi, m_lo
    for _ in range(iters):
        mid = 0.5 * (a + b)
        m_mid = median(mid)
        if (m_mid - target) * (m_a - target) > 0:
            a, m_a = mid, m_mid
        else:
            b = mid
        if abs(m_mid - target) < MEDIAN_TOLERANCE / 10:
            return mid, m_mid, True
    mid = 0.5 * (a + b)
    return mid, median(mid), True


def at_novelty(points: Sequence[Point], target: float) -> Optional[Dict[str, float]]:
    """Precision and recall of a curve at the novelty median ``target``, linearly interpolated between the
    two points that bracket it (None when the curve does not reach it)."""
    pts = sorted(points, key=lambda p: p.novelty_median)
    for a, b in zip(pts, pts[1:]):
        if a.novelty_median <= target <= b.novelty_median:
            w = 0.0 if b.novelty_median == a.novelty_median else (target - a.novelty_median) / (
                b.novelty_median - a.novelty_median)
            return {"knob": a.knob + w * (b.knob - a.knob), "precision": a.precision + w * (b.precision - a.precision),
                    "recall": a.recall + w * (b.recall - a.recall)}
    return None

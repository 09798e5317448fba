"""The fidelity / novelty / distinctness table for generated voices, judged against real held-out speakers.

Every figure is read beside what real unseen speakers score on the same split, never as an absolute number:
"realistic and new" means "like real speakers the model never saw".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional, Tuple

import numpy as np

from toucan_speakemb.evaluation import metrics as M
from toucan_speakemb.evaluation.baselines import gaussian_fit as gaussian_fit_sample  # noqa: F401  (the name benchmarks use)


@dataclass
class Reference:
    """Real data of one level (speaker means, or utterances) that generated vectors are compared with.

    heldout: real speakers the generator never saw; train: the training rows of the same level;
    threshold: the same-speaker cosine threshold (equal-error point on real utterances);
    min_entry / norm_range: the encoder's constraints, where it has them (e.g. GE2E: non-negative).
    """

    heldout: np.ndarray
    train: np.ndarray
    threshold: float
    min_entry: Optional[float] = None
    norm_range: Optional[Tuple[float, float]] = None
    k: int = 5

    @property
    def real(self) -> np.ndarray:
        return np.concatenate([self.train, self.heldout])


def subsamples(x: np.ndarray, size: int, draws: int, seed: int) -> Iterator[np.ndarray]:
    """``draws`` random subsets of ``size`` rows of ``x`` (x itself, once, when it has no more rows)."""
    if size >= len(x):
        yield x
        return
    rng = np.random.default_rng(seed)
    for _ in range(draws):
        yield x[rng.choice(len(x), size, replace=False)]


def mean_over_subsamples(x: np.ndarray, size: int, draws: int, seed: int,
                         figures: Callable[[np.ndarray], Dict[str, float]]) -> Dict[str, float]:
    """``figures(subset)`` averaged over :func:`subsamples`: how every sample-size dependent measure
    (precision, recall, density, coverage, Fréchet distance) is read at a common size, so that a system and
    the train-vs-held-out reference are compared at the same number of rows."""
    acc = [figures(sub) for sub in subsamples(x, size, draws, seed)]
    return {key: float(np.mean([a[key] for a in acc])) for key in acc[0]}


def precision_recall_at(real: np.ndarray, generated: np.ndarray, size: int, draws: int = 10, seed: int = 0,
                        k: int = 5) -> Dict[str, float]:
    """k-NN precision and recall of ``generated`` against ``real`` at ``size`` rows (see
    :func:`mean_over_subsamples`)."""
    return mean_over_subsamples(np.asarray(generated), size, draws, seed, lambda sub: dict(
        zip(("precision", "recall"), M.precision_recall(real, sub, k=k))))


def measure(generated: np.ndarray, ref: Reference, match: Optional[int] = None, draws: int = 10,
            seed: int = 0, fd_floor: Optional[float] = None) -> Dict[str, float]:
    """All measures of one system. Sample-size dependent ones (precision, recall, Fréchet distance) are
    computed on subsamples of ``match`` rows (default: as many as ``ref.train``), averaged over ``draws``,
    so that they compare with the train-vs-held-out reference computed at the same size."""
    g = np.asarray(generated, dtype=np.float64)
    size = match or len(ref.train)
    fid = mean_over_subsamples(g, size, draws, seed, lambda sub: {
        **dict(zip(("precision", "recall"), M.precision_recall(ref.heldout, sub, k=ref.k))),
        "frechet": M.frechet_distance(sub, ref.heldout)})
    fd = fid["frechet"]
    out = {
        "precision": fid["precision"],
        "recall": fid["recall"],
        "frechet": fd,
        "variance_ratio": M.total_variance_ratio(g, ref.real),
        "memorised": M.memorised_share(g, ref.train, ref.threshold),
        "close_pairs": M.close_pair_share(g, ref.threshold),
    }
    if fd_floor:
        out["frechet_ratio"] = fd / fd_floor
    if ref.min_entry is not None or ref.norm_range is not None:
        out["constraints"] = M.constraint_share(g, ref.min_entry, ref.norm_range)
    return out


def format_table(rows: Dict[str, Dict[str, float]], columns, title: str = "") -> str:
    """A Markdown table: one row per system, the given (key, header, format) columns; missing values '-'."""
    head = "| system | " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|---|" + "---:|" * len(columns)
    lines = ([f"**{title}**", ""] if title else []) + [head, sep]
    for name, vals in rows.items():
        cells = [format(vals[k], f) if k in vals and vals[k] is not None else "-" for k, _, f in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

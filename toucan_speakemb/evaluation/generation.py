"""The fidelity / novelty / distinctness table for generated voices, judged against real held-out speakers.

Every figure is read beside what real unseen speakers score on the same split, never as an absolute number:
"realistic and new" means "like real speakers the model never saw".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

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


def _subsamples(x: np.ndarray, size: int, draws: int, seed: int):
    if size >= len(x):
        yield x
        return
    rng = np.random.default_rng(seed)
    for _ in range(draws):
        yield x[rng.choice(len(x), size, replace=False)]


def measure(generated: np.ndarray, ref: Reference, match: Optional[int] = None, draws: int = 10,
            seed: int = 0, fd_floor: Optional[float] = None) -> Dict[str, float]:
    """All measures of one system. Sample-size dependent ones (precision, recall, Fréchet distance) are
    computed on subsamples of ``match`` rows (default: as many as ``ref.train``), averaged over ``draws``,
    so that they compare with the train-vs-held-out reference computed at the same size."""
    g = np.asarray(generated, dtype=np.float64)
    size = match or len(ref.train)
    prs, fds = [], []
    for sub in _subsamples(g, size, draws, seed):
        prs.append(M.precision_recall(ref.heldout, sub, k=ref.k))
        fds.append(M.frechet_distance(sub, ref.heldout))
    p, r = np.mean(prs, axis=0)
    fd = float(np.mean(fds))
    out = {
        "precision": float(p),
        "recall": float(r),
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

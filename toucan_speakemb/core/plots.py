"""Plots, drawn with matplotlib's non-interactive backend and written atomically as PNG."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from toucan_speakemb.core.fileio import atomic_write_bytes
from toucan_speakemb.core.threads import cpu_threads


def _figure(figsize=(6, 4)):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=figsize)


def _save(plt, fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def plot_loss(history: Sequence[Sequence[float]], path: Path,
              validation: Optional[Sequence[Sequence[float]]] = None, selected_step: Optional[int] = None) -> Path:
    """Training loss; with ``validation`` ([step, loss] rows) also the validation speakers' loss of the EMA
    weights, and a dashed line at the step whose weights model selection kept."""
    plt, fig = _figure()
    h = np.asarray(history, dtype=float)
    ax = fig.add_subplot(111)
    ax.plot(h[:, 0], h[:, 1], lw=1.2, label="training loss (mean over log interval)")
    if validation is not None and len(validation):
        v = np.asarray(validation, dtype=float)
        ax.plot(v[:, 0], v[:, 1], lw=1.2, marker=".", c="tab:orange", label="validation speakers (EMA weights)")
    if selected_step is not None:
        ax.axvline(selected_step, ls="--", c="grey", lw=1, label=f"selected weights (step {selected_step})")
    ax.set_xlabel("training step")
    ax.set_ylabel("denoising loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if validation is not None or selected_step is not None:
        ax.legend(fontsize=8)
    ax.set_title("training loss" if validation is None else "denoising loss: training and validation speakers")
    return _save(plt, fig, Path(path))


def plot_pca(real: np.ndarray, generated: np.ndarray, path: Path, title: str = "PCA of real and generated",
             extra: Optional[dict] = None) -> Path:
    """Real (red) and generated (blue) on the first two principal axes of the real data."""
    mu = real.mean(0)
    _, _, vt = np.linalg.svd(real - mu, full_matrices=False)
    proj = lambda x: (x - mu) @ vt[:2].T  # noqa: E731
    plt, fig = _figure((6, 5))
    ax = fig.add_subplot(111)
    r, g = proj(real), proj(generated)
    ax.scatter(r[:, 0], r[:, 1], s=6, c="tab:red", alpha=0.5, label=f"real ({len(real)})")
    ax.scatter(g[:, 0], g[:, 1], s=6, c="tab:blue", alpha=0.5, label=f"generated ({len(generated)})")
    for name, (x, color) in (extra or {}).items():
        e = proj(x)
        ax.scatter(e[:, 0], e[:, 1], s=6, c=color, alpha=0.4, label=f"{name} ({len(x)})")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(markerscale=2)
    ax.set_title(title)
    return _save(plt, fig, Path(path))


def _subsample(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(x) <= n:
        return x
    return x[np.random.default_rng(seed).choice(len(x), n, replace=False)]


def plot_tsne(real: np.ndarray, generated: np.ndarray, path: Path, title: str = "t-SNE of real and generated",
              max_points: int = 1000, seed: int = 0) -> Path:
    """Real (red) and generated (blue) in one t-SNE map (van der Maaten & Hinton 2008), as in the source
    presentation. Both sets are subsampled to one count (at most ``max_points``) and reduced to 50 principal
    components first."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    # equal counts, so that the density of the two colours can be compared by eye
    n = min(max_points, len(real), len(generated))
    r, g = _subsample(real, n, seed), _subsample(generated, n, seed + 1)
    x = np.concatenate([r, g]).astype(np.float64)
    if x.shape[1] > 50 and len(x) > 50:
        x = PCA(50, random_state=seed).fit_transform(x)
    perplexity = float(min(30, (len(x) - 1) / 3))
    with cpu_threads(1):  # OpenMP threads on a busy machine spin against each other: 5-7x slower seen
        # 500 iterations (250 after the early exaggeration) settle a map of 1000 points; 1000 took twice as long
        y = TSNE(2, perplexity=perplexity, init="pca", random_state=seed, max_iter=500).fit_transform(x)
    plt, fig = _figure((6, 5))
    ax = fig.add_subplot(111)
    ax.scatter(y[: len(r), 0], y[: len(r), 1], s=6, c="tab:red", alpha=0.6, label=f"real ({len(r)})")
    ax.scatter(y[len(r):, 0], y[len(r):, 1], s=6, c="tab:blue", alpha=0.6, label=f"generated ({len(g)})")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=2)
    ax.set_title(title)
    return _save(plt, fig, Path(path))


def plot_histograms(values: dict, path: Path, xlabel: str, title: str, threshold: Optional[float] = None) -> Path:
    """Overlaid density histograms of several distributions (label -> values), with the threshold marked."""
    plt, fig = _figure((6.5, 4))
    ax = fig.add_subplot(111)
    allv = np.concatenate([np.asarray(v, dtype=float) for v in values.values()])
    bins = np.linspace(allv.min(), allv.max(), 50)
    for label, v in values.items():
        ax.hist(np.asarray(v, dtype=float), bins=bins, density=True, histtype="step", lw=1.5, label=label)
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"same-speaker threshold {threshold:.3f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _save(plt, fig, Path(path))


def plot_dimension_ratios(ratios: dict, path: Path) -> Path:
    """Per-dimension variance ratios generated / real, sorted, one line per system (1 = matched)."""
    plt, fig = _figure((6.5, 4))
    ax = fig.add_subplot(111)
    for label, r in ratios.items():
        ax.plot(np.sort(np.asarray(r, dtype=float)), lw=1.3, label=label)
    ax.axhline(1.0, color="k", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("dimension (sorted by ratio)")
    ax.set_ylabel("variance ratio generated / real")
    ax.legend(fontsize=8)
    ax.set_title("per-dimension variance ratios")
    return _save(plt, fig, Path(path))


def plot_precision_novelty(curves: dict, path: Path, target: Optional[tuple] = None,
                           title: str = "Precision against novelty") -> Path:
    """Each system's precision against its median cosine to the nearest training speaker, along its novelty
    knob (``curves``: name -> [(novelty median, precision, knob), ...]); ``target``: (novelty median,
    precision) of real unseen speakers, the point a perfect generator sits at."""
    plt, fig = _figure((7, 4.5))
    ax = fig.add_subplot(111)
    for name, pts in curves.items():
        p = np.asarray(sorted(pts), dtype=float)
        if not len(p):
            continue
        ax.plot(p[:, 0], p[:, 1], marker="o", ms=3, lw=1.2, label=name)
        for x, y, knob in (p[[0, -1]] if len(p) > 1 else ()):  # a single point (a voice bank) has no knob
            ax.annotate(f"{knob:g}", (x, y), fontsize=7, xytext=(2, 2), textcoords="offset points")
    if target is not None:
        ax.scatter([target[0]], [target[1]], marker="*", s=160, c="k", zorder=5, label="real unseen speakers")
        ax.axvline(target[0], c="k", lw=0.6, ls=":")
    ax.set_xlabel("median cosine to the nearest training speaker (right: closer to training speakers)")
    ax.set_ylabel("precision (k-NN)")
    ax.set_title(title)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: curves stay visible
    return _save(plt, fig, path)

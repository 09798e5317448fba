"""Plots, drawn with matplotlib's non-interactive backend and written atomically as PNG."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .fileio import atomic_write_bytes


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


def plot_loss(history: Sequence[Sequence[float]], path: Path) -> Path:
    plt, fig = _figure()
    h = np.asarray(history, dtype=float)
    ax = fig.add_subplot(111)
    ax.plot(h[:, 0], h[:, 1], lw=1.2)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (mean over log interval)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.set_title("training loss")
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

"""Variance schedules β_1..β_T of the DDPM forward process q(x_t | x_{t-1}) = N(√(1-β_t) x_{t-1}, β_t I).

- ``linear`` (Ho et al. 2020): β_t evenly spaced from β_start to β_end.
- ``quadratic``: √β_t evenly spaced, then squared (the "quad" schedule of Ho et al.'s code).
- ``sigmoid``: β_t = β_start + (β_end - β_start)·σ(s), s evenly spaced on [-6, 6].
- ``cosine`` (Nichol & Dhariwal 2021, eq. 17): ᾱ_t = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s)·π/2), s = 0.008,
  β_t = 1 - ᾱ_t/ᾱ_{t-1} clipped to at most 0.999.

The source presentation's linear/quadratic/sigmoid schedules use β from 1e-5 to 1e-2.
"""

from __future__ import annotations

import math

import numpy as np

SCHEDULES = ("linear", "quadratic", "sigmoid", "cosine")


def cosine_alphas_cumprod(timesteps: int, s: float = 0.008) -> np.ndarray:
    """ᾱ_t for t = 1..T of the cosine schedule (before β clipping)."""
    t = np.arange(timesteps + 1, dtype=np.float64) / timesteps
    f = np.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return f[1:] / f[0]


def make_betas(name: str, timesteps: int, beta_start: float = 1e-5, beta_end: float = 1e-2) -> np.ndarray:
    """β_1..β_T as float64, shape (T,). ``beta_start``/``beta_end`` apply to linear, quadratic and sigmoid."""
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    if name == "linear":
        betas = np.linspace(beta_start, beta_end, timesteps, dtype=np.float64)
    elif name == "quadratic":
        betas = np.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=np.float64) ** 2
    elif name == "sigmoid":
        s = np.linspace(-6, 6, timesteps, dtype=np.float64)
        betas = beta_start + (beta_end - beta_start) / (1 + np.exp(-s))
    elif name == "cosine":
        abar = cosine_alphas_cumprod(timesteps)
        prev = np.concatenate([[1.0], abar[:-1]])
        betas = np.clip(1 - abar / prev, 0, 0.999)
    else:
        raise ValueError(f"unknown schedule '{name}' (known: {', '.join(SCHEDULES)})")
    if not (np.all(betas > 0) and np.all(betas < 1)):
        raise ValueError(f"schedule '{name}' gives betas outside (0, 1)")
    return betas

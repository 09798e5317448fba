"""Denoising networks ``model(x_t, t) -> prediction`` for d-dimensional vectors.

- :class:`FCDenoiser`: the source presentation's baseline, three fully connected layers on [x_t, t/T].
- :class:`ResidualMLPDenoiser`: the default. Residual pre-norm MLP blocks; the timestep enters every block
  through a sinusoidal embedding and a learned scale/shift (adaptive LayerNorm, as in DiT); the output layer
  starts at zero so the untrained network predicts 0 (the mean of the target).
"""

from __future__ import annotations

import math
from typing import Any, Dict

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al. 2017; Ho et al. 2020), shape (n, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1) if dim % 2 else emb


class FCDenoiser(nn.Module):
    """Three fully connected layers with ReLU on the concatenation of x_t and t/T (the source's network)."""

    def __init__(self, dim: int, num_timesteps: int, hidden: int = 512):
        super().__init__()
        self.num_timesteps = num_timesteps
        self.net = nn.Sequential(
            nn.Linear(dim + 1, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, dim)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, (t.float() / self.num_timesteps)[:, None]], dim=-1))


class _AdaLNBlock(nn.Module):
    def __init__(self, hidden: int, expansion: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.modulation = nn.Linear(hidden, 3 * hidden)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, expansion * hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(expansion * hidden, hidden)
        )
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        scale, shift, gate = self.modulation(c).chunk(3, dim=-1)
        # gate starts at 0 through the zero-initialised modulation, so each block starts as the identity
        return h + gate * self.mlp(self.norm(h) * (1 + scale) + shift)


class ResidualMLPDenoiser(nn.Module):
    def __init__(self, dim: int, num_timesteps: int, hidden: int = 512, blocks: int = 4, expansion: int = 2,
                 time_dim: int = 128, dropout: float = 0.0):
        super().__init__()
        self.time_dim = time_dim
        self.inp = nn.Linear(dim, hidden)
        self.time = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.blocks = nn.ModuleList(_AdaLNBlock(hidden, expansion, dropout) for _ in range(blocks))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = nn.functional.silu(self.time(timestep_embedding(t, self.time_dim)))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, c)
        return self.out(self.out_norm(h))


DENOISERS = {"fc3": FCDenoiser, "resmlp": ResidualMLPDenoiser}


def build_denoiser(kind: str, dim: int, num_timesteps: int, options: Dict[str, Any]) -> nn.Module:
    if kind not in DENOISERS:
        raise ValueError(f"unknown denoiser '{kind}' (known: {', '.join(DENOISERS)})")
    return DENOISERS[kind](dim, num_timesteps, **options)

"""Denoising networks ``model(x_t, t) -> prediction`` for d-dimensional vectors.

- :class:`FCDenoiser`: the source presentation's baseline, three fully connected layers on [x_t, t/T].
- :class:`ResidualMLPDenoiser`: the default. Residual pre-norm MLP blocks; the timestep enters every block
  through a sinusoidal embedding and a learned scale/shift (adaptive LayerNorm, as in DiT); the output layer
  starts at zero so the untrained network predicts 0 (the mean of the target). With ``conditions`` (attribute
  -> number of values) it also takes ``cond`` (n, k) integer codes, 0 = the null token ("no condition"): a
  learned embedding per value of each attribute (and one for "unknown") is added to the time embedding
  (classifier-free guidance; see toucan_speakemb/training/conditions.py).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from toucan_speakemb.diffusion.gaussian import gaussian_posterior_x0, posterior_gain, prediction_from_x0


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
        # c is (n, hidden) or, when every row shares one timestep, (1, hidden) broadcast over the batch
        scale, shift, gate = self.modulation(c).chunk(3, dim=-1)
        # gate starts at 0 through the zero-initialised modulation, so each block starts as the identity
        return h + gate * self.mlp(self.norm(h) * (1 + scale) + shift)


class ResidualMLPDenoiser(nn.Module):
    def __init__(self, dim: int, num_timesteps: int, hidden: int = 512, blocks: int = 4, expansion: int = 2,
                 time_dim: int = 128, dropout: float = 0.0, conditions: Optional[Dict[str, int]] = None):
        super().__init__()
        self.time_dim = time_dim
        # one table per attribute: row 0 its null token, 1..k its values, k + 1 "unknown"
        self.conditions = nn.ModuleList(nn.Embedding(k + 2, hidden) for k in (conditions or {}).values())
        for table in self.conditions:
            nn.init.normal_(table.weight, std=0.02)
        self.inp = nn.Linear(dim, hidden)
        self.time = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.blocks = nn.ModuleList(_AdaLNBlock(hidden, expansion, dropout) for _ in range(blocks))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        if bool((t == t[0]).all()):  # samplers: one timestep per call, embed it once
            t = t[:1]
        c = self.time(timestep_embedding(t, self.time_dim))
        if len(self.conditions):
            if cond is None:  # no condition given: every attribute's null token (the unconditional model)
                cond = torch.zeros(1, len(self.conditions), dtype=torch.long, device=x.device)
            c = c + sum(table(cond[:, j]) for j, table in enumerate(self.conditions))
        c = nn.functional.silu(c)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, c)
        return self.out(self.out_norm(h))


class GaussianResidual(nn.Module):
    """Prediction = the exact prediction for a Gaussian fit of the training data + a network's correction.

    The Gaussian part is the closed-form posterior mean E[x_0 | x_t] of N(μ, Σ) (μ, Σ of the training rows,
    stored as buffers), converted to the network's target (ε or v). With the network's output layer at
    zero, the untrained model *is* the full-covariance Gaussian fit; training only has to learn how the
    data departs from it (clusters, curvature, bounds). It also lets a network narrower than the data pass
    the full-rank linear part through, which a bottleneck MLP cannot (704 dims through 256 hidden units).

    ``subspace`` k < d: the network sees and corrects only the k principal coordinates (``basis``, d x k);
    the other d - k directions are left to the Gaussian part. ``rest`` says what they are there:

    - ``"full"``: the full-covariance fit's own variances, so the untrained model is the same Gaussian as
      without a subspace and only the network's reach shrinks (fewer inputs and outputs to learn from few
      speakers; on the synthetic benchmark set its held-out loss is lower than the full-width network's).
    - ``"isotropic"``: a probabilistic PCA (Tipping & Bishop 1999): the d - k share their mean variance.
      Exact when the data is a structured part in the k directions plus isotropic scatter (the posterior
      mean of the rest is then the Gaussian's, and that of the principal part depends on x_t's principal
      coordinates only), with one number instead of a noisy (d - k)-dim covariance estimate.
    """

    def __init__(self, net: nn.Module, dim: int, alphas_cumprod, prediction: str,
                 subspace: Optional[int] = None, conditions: Optional[Dict[str, int]] = None, rest: str = "full"):
        super().__init__()
        # autoguidance (Karras et al. 2024) with the Gaussian fit as the weaker model: the prediction is
        # Gaussian + scale x correction. 1 while training; samplers set it (Generator.guided)
        self.correction_scale = 1.0
        if rest not in ("full", "isotropic"):
            raise ValueError(f"rest must be 'full' or 'isotropic'; got {rest!r}")
        self.rest = rest
        self.net = net
        self.prediction = prediction
        self.register_buffer("abar", torch.as_tensor(alphas_cumprod, dtype=torch.float32))
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("eigvecs", torch.eye(dim))
        self.register_buffer("eigvals", torch.ones(dim))
        # conditional models: the Gaussian's mean moves by the offset of each condition's value (row 0, the null
        # token, moves nothing; then the values; last "unknown"), its covariance stays that of all the data
        self.n_conditions = len(conditions or {})
        for j, k in enumerate((conditions or {}).values()):
            self.register_buffer(f"offset{j}", torch.zeros(k + 2, dim))
        self.subspace = subspace if subspace is not None and subspace < dim else None
        if self.subspace is not None:
            self.register_buffer("basis", torch.eye(dim)[:, : self.subspace].clone())

    def fit_gaussian(self, x: torch.Tensor, weights: Optional[torch.Tensor] = None) -> None:
        x = x.double()
        if weights is None:
            w = torch.full((len(x),), 1.0 / len(x), dtype=torch.float64, device=x.device)
        else:
            w = weights.double().to(x.device) / weights.sum().to(x.device)
        mean = w @ x
        xc = x - mean
        cov = (xc * w[:, None]).T @ xc * (len(x) / max(len(x) - 1, 1))
        vals, vecs = torch.linalg.eigh(cov)
        if self.subspace is not None:  # largest first (without a subspace eigh's order is kept: same files as before)
            vals, vecs = vals.flip(0).clamp_min(0), vecs.flip(1)
            k = self.subspace
            if self.rest == "isotropic":
                vals = torch.cat([vals[:k], vals[k:].mean().expand(len(vals) - k)])
            self.basis.copy_(vecs[:, :k].float())
        self.mean.copy_(mean.float())
        self.eigvecs.copy_(vecs.float())
        self.eigvals.copy_(vals.clamp_min(1e-6).float())

    def fit_condition_offsets(self, x: torch.Tensor, codes: torch.Tensor) -> None:
        """Offsets of the mean per condition value: the mean of its rows minus the mean of all (main effects)."""
        for j in range(self.n_conditions):
            table = getattr(self, f"offset{j}")
            table.zero_()
            for c in range(1, len(table)):
                rows = codes[:, j] == c
                if bool(rows.any()):
                    table[c] = x[rows].double().mean(0).float() - self.mean

    def condition_mean(self, cond: Optional[torch.Tensor], scale: float = 1.0) -> torch.Tensor:
        """The Gaussian's mean for condition codes (n, k) or (k,), offsets times ``scale``: (n, d) or (d,)."""
        if cond is None or not self.n_conditions:
            return self.mean
        return self.mean + scale * sum(getattr(self, f"offset{j}")[cond[..., j]] for j in range(self.n_conditions))

    def gaussian_part(self) -> "GaussianResidual":
        """What samplers take their exact Gaussian step from (see :func:`gaussian_part`)."""
        return self

    def gaussian_prediction(self, x: torch.Tensor, t: torch.Tensor, mean: Optional[torch.Tensor] = None) -> torch.Tensor:
        a = self.abar[t][:, None]
        x0 = gaussian_posterior_x0(x, a, self.mean if mean is None else mean, self.eigvecs, self.eigvals)
        return prediction_from_x0(self.prediction, x, a, x0)

    def correction(self, x: torch.Tensor, t: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The network's part of the prediction (in the principal subspace when there is one; ``cond``:
        condition codes of a conditional network)."""
        out = self._correction(x, t, cond)
        return out if self.correction_scale == 1 else self.correction_scale * out

    def _correction(self, x: torch.Tensor, t: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        args = () if cond is None else (cond,)
        if self.subspace is None:
            return self.net(x, t, *args)
        # the coordinates through the full d x d rotation when the basis is its leading columns: a product with the
        # narrow (d, k) basis gives a row a result that depends on its position in the batch for some d and k
        # (k < 12 and d not a multiple of 4; see gaussian_flow_step)
        k = self.eigen_subspace()
        c = (x @ self.eigvecs)[:, :k].contiguous() if k else F.linear(x, self.basis.T.contiguous())
        return self.net(c, t, *args) @ self.basis.T

    def eigen_subspace(self) -> Optional[int]:
        """k when the network reads the first k coordinates of the Gaussian's eigenbasis (a principal subspace,
        largest variances first), so that samplers may run in that basis; else None."""
        if self.subspace is None or not torch.equal(self.basis, self.eigvecs[:, : self.subspace]):
            return None
        return self.subspace

    def correction_in_eigenbasis(self, c: torch.Tensor, t: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        """:meth:`correction` in the eigenbasis: from x_t's first k eigen-coordinates ``c`` (n, k), the
        correction's first k (its other d - k are 0). Only when :meth:`eigen_subspace` is k."""
        out = self.net(c, t) if cond is None else self.net(c, t, cond)
        return out if self.correction_scale == 1 else self.correction_scale * out

    def trains_in_eigenbasis(self, diffusion) -> bool:
        """Whether :meth:`loss_in_eigenbasis` stands for ``diffusion``'s training loss: an L2 loss (L1 is not
        invariant under rotation) of the prediction this model makes, by a network that sees a principal
        subspace (it then reads the first k eigen-coordinates; a full-width network reads the data's own)."""
        return diffusion.loss_type == "l2" and diffusion.prediction == self.prediction and self.subspace is not None

    def loss_in_eigenbasis(self, diffusion, c0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                           cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The L2 training loss computed in the Gaussian's eigenbasis: ``c0`` the rows' coordinates there
        (x0 @ eigvecs), ``noise`` ε in those coordinates.

        The same objective as ``diffusion.training_loss(self, x0, t, ε)`` with x0 = c0 Vᵀ and ε = noise Vᵀ (V
        is orthonormal and a squared error does not change under rotation), without its two d x d products per
        step: in this basis the Gaussian's posterior is diagonal (:func:`posterior_gain`) and the network's
        subspace is the first k coordinates. The loss is the mean over all d coordinates, as there."""
        if self.correction_scale != 1:
            raise ValueError("the training loss is the model as trained (correction_scale 1)")
        if not self.trains_in_eigenbasis(diffusion):
            raise ValueError("the loss in the eigenbasis is the L2 loss of a subspace network's own prediction")
        a = self.abar[t][:, None]
        ct = diffusion.q_sample(c0, t, noise)
        m = self._mean_in_eigenbasis(cond)
        gaussian = prediction_from_x0(self.prediction, ct, a, m + posterior_gain(a, self.eigvals) * (ct - a.sqrt() * m))
        residual = diffusion.target(c0, t, noise) - gaussian  # what the network must add to the Gaussian
        k = self.subspace
        out = self.net(ct[:, :k], t) if cond is None else self.net(ct[:, :k], t, cond)
        return ((out - residual[:, :k]).pow(2).sum() + residual[:, k:].pow(2).sum()) / residual.numel()

    def _mean_in_eigenbasis(self, cond: Optional[torch.Tensor]) -> torch.Tensor:
        """:meth:`condition_mean` in eigen-coordinates, (d,) or (n, d), from the (few-row) offset tables."""
        v = self.eigvecs
        if cond is None or not self.n_conditions:
            return self.mean @ v
        return self.mean @ v + sum((getattr(self, f"offset{j}") @ v)[cond[..., j]] for j in range(self.n_conditions))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        # with conditions the Gaussian part only moves its mean: guidance w then gives the Gaussian of mean
        # μ + w·offset, so the DDIM step stays exact for every w (see generator.GuidedDenoiser)
        if cond is None:
            return self.gaussian_prediction(x, t) + self.correction(x, t)
        return self.gaussian_prediction(x, t, self.condition_mean(cond)) + self.correction(x, t, cond)


DENOISERS = {"fc3": FCDenoiser, "resmlp": ResidualMLPDenoiser}


def gaussian_part(model):
    """The exact Gaussian part of a denoiser's prediction, or None when it has none.

    A denoiser with one (:class:`GaussianResidual`, or a guided wrapper around it) answers ``gaussian_part()``
    with an object that has ``mean``, ``eigvecs``, ``eigvals`` of N(μ, Σ) and ``correction(x, t)``, the network's
    share of the prediction: the DDIM sampler steps the Gaussian exactly, and sliders move voices along its
    eigenvectors. When it also has ``eigen_subspace()`` and ``correction_in_eigenbasis(c, t)``
    (:class:`GaussianResidual`), the sampler may run in the Gaussian's eigenbasis. Every caller asks here instead of testing types."""
    method = getattr(model, "gaussian_part", None)
    return method() if callable(method) else None


def build_denoiser(kind: str, dim: int, num_timesteps: int, options: Dict[str, Any]) -> nn.Module:
    if kind not in DENOISERS:
        raise ValueError(f"unknown denoiser '{kind}' (known: {', '.join(DENOISERS)})")
    return DENOISERS[kind](dim, num_timesteps, **options)

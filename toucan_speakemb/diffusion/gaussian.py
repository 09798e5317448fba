"""Gaussian diffusion on vectors: forward process, training targets and losses, and samplers.

Notation (Ho et al. 2020; Nichol & Dhariwal 2021; Salimans & Ho 2022 for v; Song et al. 2021 for DDIM),
with index t = 0..T-1 standing for diffusion step t+1:

    α_t = 1 - β_t,   ᾱ_t = Π_{s<=t} α_s
    q(x_t | x_0)          = N(√ᾱ_t x_0, (1 - ᾱ_t) I)
    q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I),  μ̃_t = c0_t x_0 + ct_t x_t,
        c0_t = √ᾱ_{t-1} β_t / (1 - ᾱ_t),  ct_t = √α_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t),  β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t)
    ε-prediction: the network predicts ε in x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε
    v-prediction: the network predicts v = √ᾱ_t ε - √(1-ᾱ_t) x_0

The denoiser is any callable ``model(x_t, t) -> prediction`` with t an integer tensor of shape (n,).

Each piece is written once: the forward process (:meth:`GaussianDiffusion.q_sample`), prediction <-> x_0 / ε
(:meth:`GaussianDiffusion.x0_and_eps`, :func:`prediction_from_x0`), timestep spacing
(:meth:`GaussianDiffusion.ddim_timesteps`, also for partial paths), the exact Gaussian quantities
(:func:`gaussian_posterior_x0`, :func:`gaussian_flow_step`, :func:`noisy_variance`) and the sampling loops;
:mod:`toucan_speakemb.diffusion.samplers` registers the loops by name.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

PREDICTIONS = ("eps", "v")
LOSSES = ("l1", "l2")
VARIANCES = ("small", "large")  # β̃_t (posterior) or β_t, the two choices of Ho et al.

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class GaussianDiffusion:
    def __init__(self, betas: np.ndarray, prediction: str = "eps", loss: str = "l2", variance: str = "small"):
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction '{prediction}' (known: {', '.join(PREDICTIONS)})")
        if loss not in LOSSES:
            raise ValueError(f"unknown loss '{loss}' (known: {', '.join(LOSSES)})")
        if variance not in VARIANCES:
            raise ValueError(f"unknown variance '{variance}' (known: {', '.join(VARIANCES)})")
        self.prediction, self.loss_type, self.variance = prediction, loss, variance
        b = np.asarray(betas, dtype=np.float64)
        self.num_timesteps = len(b)
        self.betas = b
        self.alphas = 1.0 - b
        self.alphas_cumprod = np.cumprod(self.alphas)
        self.alphas_cumprod_prev = np.concatenate([[1.0], self.alphas_cumprod[:-1]])
        ab, abp = self.alphas_cumprod, self.alphas_cumprod_prev
        self.posterior_variance = b * (1 - abp) / (1 - ab)
        self.posterior_coef_x0 = np.sqrt(abp) * b / (1 - ab)
        self.posterior_coef_xt = np.sqrt(self.alphas) * (1 - abp) / (1 - ab)

    # ---- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _at(arr: np.ndarray, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """arr[t] as a column broadcastable against ``like`` (n, d)."""
        return torch.as_tensor(arr, dtype=like.dtype, device=like.device)[t].reshape(-1, *([1] * (like.dim() - 1)))

    # ---- forward process --------------------------------------------------------------------------
    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor):
        return self._at(np.sqrt(self.alphas_cumprod), t, x0) * x0, self._at(1 - self.alphas_cumprod, t, x0)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        mean, var = self.q_mean_variance(x0, t)
        return mean + var.sqrt() * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
        mean = self._at(self.posterior_coef_x0, t, xt) * x0 + self._at(self.posterior_coef_xt, t, xt) * xt
        return mean, self._at(self.posterior_variance, t, xt)

    # ---- conversions between what the network predicts and x0 / ε ---------------------------------
    def target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if self.prediction == "eps":
            return noise
        return self._at(np.sqrt(self.alphas_cumprod), t, x0) * noise - self._at(np.sqrt(1 - self.alphas_cumprod), t, x0) * x0

    def x0_and_eps(self, xt: torch.Tensor, t: torch.Tensor, out: torch.Tensor):
        sa = self._at(np.sqrt(self.alphas_cumprod), t, xt)
        s1 = self._at(np.sqrt(1 - self.alphas_cumprod), t, xt)
        if self.prediction == "eps":
            eps = out
            x0 = (xt - s1 * eps) / sa
        else:
            x0 = sa * xt - s1 * out
            eps = s1 * xt + sa * out
        return x0, eps

    # ---- training ---------------------------------------------------------------------------------
    def training_loss(self, model: Denoiser, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                      cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean L1 or L2 between the network output at x_t ~ q(x_t|x_0) and its target (``cond``: condition
        codes of a conditional network)."""
        xt = self.q_sample(x0, t, noise)
        out = model(xt, t) if cond is None else model(xt, t, cond)
        tgt = self.target(x0, t, noise)
        return F.l1_loss(out, tgt) if self.loss_type == "l1" else F.mse_loss(out, tgt)

    # ---- samplers ---------------------------------------------------------------------------------
    @torch.no_grad()
    def p_sample_loop(self, model: Denoiser, x_T: torch.Tensor, generator: Optional[torch.Generator] = None,
                      clip: Optional[float] = None, progress: Optional[Callable] = None,
                      noise_fn: Optional[Callable[[], torch.Tensor]] = None) -> torch.Tensor:
        """Ancestral DDPM sampling over all T steps, from x_T (usually N(0, I)).

        Step noise comes from ``noise_fn()`` when given (e.g. one generator per row, so a row does not depend
        on its batch), else from ``generator``."""
        x = x_T
        var = self.posterior_variance if self.variance == "small" else self.betas
        for i in reversed(range(self.num_timesteps)):
            t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
            x0, _ = self.x0_and_eps(x, t, model(x, t))
            if clip is not None:
                x0 = x0.clamp(-clip, clip)
            mean, _ = self.q_posterior(x0, x, t)
            if i > 0:
                noise = noise_fn() if noise_fn is not None else torch.randn(
                    x.shape, generator=generator, dtype=x.dtype, device=x.device)
                x = mean + self._at(np.sqrt(var), t, x) * noise
            else:
                x = mean
            if progress is not None:
                progress(1)
        return x

    @staticmethod
    def ddim_timesteps(num_timesteps: int, steps: int, start: Optional[int] = None) -> np.ndarray:
        """A decreasing sub-sequence of ``steps`` indices from ``start`` - 1 (default T - 1: pure noise) to 0
        ("trailing" spacing, so the first step starts where asked: Lin et al. 2024). A ``start`` below T is the
        partial path of re-noised data (SDEdit)."""
        start = num_timesteps if start is None else int(start)
        if not 1 <= start <= num_timesteps:
            raise ValueError(f"the first step must be in 1..{num_timesteps}, got {start}")
        if not 1 <= steps <= start:
            raise ValueError(f"sampling steps must be in 1..{start}, got {steps}")
        ts = np.round(np.linspace(start, 0, steps + 1))[:-1].astype(np.int64) - 1
        return np.unique(np.clip(ts, 0, num_timesteps - 1))[::-1]

    @torch.no_grad()
    def ddim_sample_loop(self, model: Denoiser, x_T: torch.Tensor, steps: int = 50, eta: float = 0.0,
                         generator: Optional[torch.Generator] = None, clip: Optional[float] = None,
                         timesteps: Optional[Sequence[int]] = None, gaussian=None,
                         noise_fn: Optional[Callable[[], torch.Tensor]] = None) -> torch.Tensor:
        """DDIM (Song et al. 2021, eq. 12): deterministic for eta = 0; eta = 1 is DDPM-like on the sub-sequence.

        ``gaussian``: a model whose prediction is a Gaussian part plus a correction (it has ``mean``,
        ``eigvecs``, ``eigvals`` of N(μ, Σ), ``correction(x, t)``, and optionally ``eigen_subspace()`` and
        ``correction_in_eigenbasis(c, t)``: see :meth:`_ddim_moves`). Then, with eta = 0, the Gaussian part of each step is taken
        exactly (:func:`gaussian_flow_step`) and only the correction with DDIM's first-order step, so few
        steps no longer shrink the samples: DDIM alone is exact for no Gaussian but in the limit of many steps.
        """
        ts = np.asarray(timesteps) if timesteps is not None else self.ddim_timesteps(self.num_timesteps, steps)
        exact_gaussian = gaussian is not None and eta == 0
        if exact_gaussian and clip is not None:
            raise ValueError("clip bounds the whole x0 prediction; with the exact Gaussian step it is split in two")
        ab = self.alphas_cumprod
        if exact_gaussian:
            # DDIM is linear in the prediction: the Gaussian part of the step is taken exactly and only the
            # network's correction (its contribution with x_t set to 0) gets DDIM's first-order step
            ends = [float(ab[j]) for j in ts[1:]] + [1.0]
            return self._ddim_moves(model, x_T, [(int(i), float(ab[i]), a) for i, a in zip(ts, ends)], gaussian)
        x = x_T
        for k, i in enumerate(ts):
            t = torch.full((x.shape[0],), int(i), dtype=torch.long, device=x.device)
            a_prev = ab[ts[k + 1]] if k + 1 < len(ts) else 1.0
            x0, eps = self.x0_and_eps(x, t, model(x, t))
            if clip is not None:
                x0 = x0.clamp(-clip, clip)
                eps = (x - float(np.sqrt(ab[i])) * x0) / float(np.sqrt(1 - ab[i]))
            sigma = eta * np.sqrt((1 - a_prev) / (1 - ab[i]) * (1 - ab[i] / a_prev))
            x = float(np.sqrt(a_prev)) * x0 + float(np.sqrt(max(1 - a_prev - sigma**2, 0.0))) * eps
            if sigma > 0:
                noise = noise_fn() if noise_fn is not None else torch.randn(
                    x.shape, generator=generator, dtype=x.dtype, device=x.device)
                x = x + float(sigma) * noise
        return x

    @torch.no_grad()
    def ddim_invert_loop(self, model: Denoiser, x0: torch.Tensor, steps: int = 50,
                         timesteps: Optional[Sequence[int]] = None, gaussian=None) -> torch.Tensor:
        """DDIM inversion (Song et al. 2021, sec. 4.3): the deterministic sampler's path run backwards, from data
        ``x0`` up through ``timesteps`` (decreasing, as given to :meth:`ddim_sample_loop`) to the noise that
        :meth:`ddim_sample_loop` with eta = 0 and the same ``timesteps`` and ``gaussian`` maps back to ≈ x0.

        Each step evaluates the model where it stands (data counts as step 0), so the round trip is exact for the
        Gaussian part (taken exactly with ``gaussian``, :func:`gaussian_flow_step` being invertible) and for the
        rest converges at first order in the number of steps."""
        ts = np.asarray(timesteps) if timesteps is not None else self.ddim_timesteps(self.num_timesteps, steps)
        moves, t_from, a_from = [], 0, 1.0
        for i in ts[::-1]:
            moves.append((t_from, a_from, float(self.alphas_cumprod[i])))
            t_from, a_from = int(i), float(self.alphas_cumprod[i])
        return self._ddim_moves(model, x0, moves, gaussian)

    def _ddim_moves(self, model: Denoiser, x: torch.Tensor, moves: Sequence, gaussian=None) -> torch.Tensor:
        """``x`` carried through deterministic DDIM ``moves`` (model step t, from ᾱ = a_from to a_to).

        When the network of a Gaussian-residual model reads the first k coordinates of the Gaussian's
        eigenbasis (``gaussian.eigen_subspace()``), the path runs in that basis: the exact Gaussian step is then
        elementwise and the network's input and output are the first k coordinates, so the d x d products of
        every step (two for the Gaussian, two d x k for the subspace) become one rotation in and one out. The
        same arithmetic as the step in the data's coordinates up to float rounding (a test checks)."""
        k = eigen_subspace(gaussian)
        if not k:
            for t, a_from, a_to in moves:
                x = self._ddim_step(model, x, t, a_from, a_to, gaussian)
            return x
        v = gaussian.eigvecs
        m = gaussian.mean @ v
        c = x @ v
        for t, a_from, a_to in moves:
            tt = torch.full((c.shape[0],), int(t), dtype=torch.long, device=c.device)
            x0_c, eps_c = self.x0_and_eps(torch.zeros_like(c[:, :k]), tt,
                                          gaussian.correction_in_eigenbasis(c[:, :k].contiguous(), tt))
            c = a_to**0.5 * m + flow_gain(a_from, a_to, gaussian.eigvals) * (c - a_from**0.5 * m)
            c[:, :k] += float(np.sqrt(a_to)) * x0_c + float(np.sqrt(1 - a_to)) * eps_c
        return c @ v.T.contiguous()  # a contiguous transpose: see gaussian_flow_step

    def _ddim_step(self, model: Denoiser, x: torch.Tensor, t: int, a_from: float, a_to: float, gaussian=None):
        """One deterministic DDIM move of ``x`` from noise level ᾱ = a_from (model evaluated at step t) to a_to."""
        tt = torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)
        if gaussian is None:
            x0, eps = self.x0_and_eps(x, tt, model(x, tt))
            return float(np.sqrt(a_to)) * x0 + float(np.sqrt(1 - a_to)) * eps
        x0_c, eps_c = self.x0_and_eps(torch.zeros_like(x), tt, gaussian.correction(x, tt))
        return (gaussian_flow_step(x, a_from, a_to, gaussian.mean, gaussian.eigvecs, gaussian.eigvals)
                + float(np.sqrt(a_to)) * x0_c + float(np.sqrt(1 - a_to)) * eps_c)


def eigen_subspace(gaussian) -> Optional[int]:
    """k when the network of ``gaussian`` (a Gaussian part, or None) reads the first k coordinates of its
    eigenbasis, else None; a Gaussian part with only the basic contract (``mean``, ``eigvecs``, ``eigvals``,
    ``correction``) has none."""
    method = getattr(gaussian, "eigen_subspace", None)
    return method() if callable(method) else None


def tempered(x_T: torch.Tensor, temperature: float, gaussian=None, rest: float = 1.0,
             directions: Optional[Sequence[float]] = None) -> torch.Tensor:
    """The initial noise ``x_T`` at ``temperature``: multiplied by it, or, when the network of ``gaussian``
    models a principal subspace (:func:`eigen_subspace`), its component outside that subspace by ``rest`` x
    ``temperature`` (the Gaussian part's exact directions; sample.rest_temperature) and, with ``directions``
    (one factor per direction of the subspace, :func:`variance_scales`), each of the k principal coordinates by
    its factor x ``temperature``."""
    k = eigen_subspace(gaussian) if rest != 1 or directions is not None else None
    if not k:
        if directions is not None:
            raise ValueError("direction factors for a model whose network models no principal subspace")
        return x_T * temperature
    # through the full d x d rotation and back, as the eigenbasis sampler does: a product with the narrow d x k
    # basis gives a row a result that depends on its position in the batch for some d and k (d not a multiple of
    # 4, k of 2-11), and a voice must not depend on its batch
    scale = torch.full((x_T.shape[1],), float(rest) * temperature, dtype=x_T.dtype, device=x_T.device)
    scale[:k] = temperature
    if directions is not None:
        if len(directions) != k:
            raise ValueError(f"{len(directions)} direction factors for a subspace of {k} directions")
        scale[:k] *= torch.as_tensor(np.asarray(directions, np.float64), dtype=x_T.dtype, device=x_T.device)
    return ((x_T @ gaussian.eigvecs) * scale) @ gaussian.eigvecs.T.contiguous()


def variance_scales(variances: np.ndarray, eigvals: np.ndarray, strength: float) -> np.ndarray:
    """Noise factors for the principal coordinates of a model whose voices there have ``variances`` where the
    training rows have ``eigvals`` (the Gaussian fit's): (λ / v)^(strength / 2). Multiplying a coordinate's
    initial noise by its factor scales its voices' spread by about as much (exactly for the Gaussian part, whose
    deterministic sampler is linear in x_T), so ``strength`` 1 would give each coordinate the training
    variance, 0 leaves the model as it is, and ½ goes halfway in log-variance: a network that shrinks some
    directions (autoguidance, the EMA's averaging) is widened there and narrowed where it overspreads."""
    v, lam = np.asarray(variances, np.float64), np.asarray(eigvals, np.float64)
    if not (np.all(v > 0) and np.all(lam > 0)):
        raise ValueError("variances and eigenvalues must be positive")
    return (lam / v) ** (0.5 * float(strength))


def prediction_from_x0(prediction: str, xt: torch.Tensor, abar: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """The network output (``prediction`` "eps" or "v") that stands for the clean estimate ``x0`` at ``xt``,
    noise level ``abar`` a tensor broadcastable against the rows: ε = (x_t - √ᾱ x_0) / √(1-ᾱ),
    v = √ᾱ ε - √(1-ᾱ) x_0. The inverse of :meth:`GaussianDiffusion.x0_and_eps`."""
    eps = (xt - abar.sqrt() * x0) / (1 - abar).sqrt()
    return eps if prediction == "eps" else abar.sqrt() * eps - (1 - abar).sqrt() * x0


def gaussian_posterior_x0(xt: torch.Tensor, abar: torch.Tensor, mean: torch.Tensor, eigvecs: torch.Tensor,
                          eigvals: torch.Tensor) -> torch.Tensor:
    """E[x_0 | x_t] when x_0 ~ N(mean, V diag(λ) Vᵀ), for rows with their own ᾱ (``abar`` shape (n, 1)).

    In the eigenbasis every coordinate is an independent scalar Gaussian:
    E[c_0 | c_t] = m + √ᾱ λ / (ᾱ λ + 1 - ᾱ) (c_t - √ᾱ m).
    """
    abar = torch.as_tensor(abar, dtype=xt.dtype)
    if abar.numel() == 1 or bool((abar == abar.reshape(-1)[0]).all()):
        # one noise level for all rows (samplers): fold the eigenbasis into one d x d matrix, one product
        a0 = abar.reshape(-1)[0]
        m = (eigvecs * posterior_gain(a0, eigvals)) @ eigvecs.T
        return mean + (xt - a0.sqrt() * mean) @ m
    c = (xt - abar.sqrt() * mean) @ eigvecs             # (n, d) coordinates in the eigenbasis
    return mean + (posterior_gain(abar, eigvals) * c) @ eigvecs.T


def posterior_gain(abar: torch.Tensor, eigvals: torch.Tensor) -> torch.Tensor:
    """√ᾱ λ / (ᾱ λ + 1 - ᾱ): in the eigenbasis of N(m, V diag(λ) Vᵀ), E[c_0 | c_t] = m + gain (c_t - √ᾱ m)."""
    return abar.sqrt() * eigvals / (abar * eigvals + (1 - abar))


def gaussian_flow_step(xt: torch.Tensor, abar_t: float, abar_s: float, mean: torch.Tensor, eigvecs: torch.Tensor,
                       eigvals: torch.Tensor) -> torch.Tensor:
    """Exact probability-flow ODE transport from noise level ᾱ_t to ᾱ_s for data N(mean, V diag(λ) Vᵀ).

    Each eigen-coordinate is Gaussian with mean √ᾱ m and variance ᾱλ + 1 - ᾱ at every level, and the flow
    keeps its standardised value: c_s = √ᾱ_s m + √((ᾱ_s λ + 1 - ᾱ_s) / (ᾱ_t λ + 1 - ᾱ_t)) (c_t - √ᾱ_t m).
    """
    c = (xt - abar_t**0.5 * mean) @ eigvecs
    scale = flow_gain(abar_t, abar_s, eigvals)
    # a contiguous transpose: with a transposed operand narrower than 8 columns the matrix kernel's result for a
    # row depends on its position in the batch, and a voice must not depend on its batch (samplers.in_blocks)
    return abar_s**0.5 * mean + (c * scale) @ eigvecs.T.contiguous()


def flow_gain(abar_t: float, abar_s: float, eigvals: torch.Tensor) -> torch.Tensor:
    """√((ᾱ_s λ + 1 - ᾱ_s) / (ᾱ_t λ + 1 - ᾱ_t)): how the probability flow from ᾱ_t to ᾱ_s scales each centred
    eigen-coordinate of N(m, V diag(λ) Vᵀ)."""
    return (noisy_variance(abar_s, eigvals) / noisy_variance(abar_t, eigvals)).sqrt()


def noisy_variance(abar, eigvals):
    """ᾱλ + 1 - ᾱ: the variance at noise level ᾱ of a data coordinate of variance λ (numpy or torch)."""
    return abar * eigvals + 1 - abar


def gaussian_optimal_denoiser(diffusion: GaussianDiffusion, mean: torch.Tensor, cov: torch.Tensor) -> Denoiser:
    """The exact (Bayes-optimal) network output when the data is N(mean, cov).

    E[x_0 | x_t] = μ + √ᾱ Σ (ᾱ Σ + (1-ᾱ) I)^{-1} (x_t - √ᾱ μ); converted to the diffusion's prediction type.
    Used by the tests: with it, samplers must reproduce N(mean, cov).
    """
    d = mean.shape[0]
    eye = torch.eye(d, dtype=cov.dtype)

    def model(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(xt)
        for i in torch.unique(t).tolist():
            rows = t == i
            a = float(diffusion.alphas_cumprod[i])
            gain = np.sqrt(a) * cov @ torch.linalg.inv(a * cov + (1 - a) * eye)
            x0 = mean + (xt[rows] - np.sqrt(a) * mean) @ gain.T
            out[rows] = prediction_from_x0(diffusion.prediction, xt[rows], torch.tensor(a, dtype=xt.dtype), x0)
        return out

    return model

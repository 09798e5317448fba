"""Samplers: how a trained denoiser turns noise into data, registered by name (the names live here only).

Each sampler is one entry of :data:`SAMPLERS`; the config check, the ``--sampler`` choice, the generator and the
voice bank's provenance all read the registry, so a new sampler is one :func:`register` call beside the loop it
runs (in :mod:`toucan_speakemb.diffusion.gaussian`, where every piece of the process is written once).

Per-voice randomness and arithmetic also live here, so that a voice never depends on the other voices of its
batch, bit for bit: every random draw a voice needs (its starting noise x_T, the noise of stochastic steps, the
noise of re-noising) comes from its own seed through :class:`VoiceNoise`, one stream per use; and every
computation on voices runs in blocks of exactly :data:`BLOCK_ROWS` rows (:func:`in_blocks`), the last one
padded, because matrix kernels choose their algorithm (and so their rounding) by the shape of the batch: a
voice re-made alone from its seed is then the very same vector as in a bank of thousands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Sequence, Tuple

import numpy as np

if TYPE_CHECKING:  # torch is imported on first use: the command line reads the names without loading it
    import torch

    from toucan_speakemb.diffusion.gaussian import Denoiser, GaussianDiffusion

BLOCK_ROWS = 256  # rows of every block a sampler, decoder or inverter computes (see the module's docstring)

# The noise streams of one voice seed: the seed is mixed with the stream's constant (x_T uses the seed itself).
INITIAL_STREAM = 0
STEP_STREAM = 0x5EED
RENOISE_STREAM = 0x5D1DE


class VoiceNoise:
    """Standard normal rows, row i from its own ``torch.Generator`` seeded ``seeds[i] ^ stream``: successive
    :meth:`draw` calls continue each row's stream, so a row is the same in any batch."""

    def __init__(self, seeds: Sequence[int], dim: int, stream: int = INITIAL_STREAM):
        import torch

        self.dim = dim
        self.generators = [torch.Generator().manual_seed(int(s) ^ stream) for s in seeds]

    def draw(self) -> "torch.Tensor":
        import torch

        if not self.generators:
            return torch.zeros(0, self.dim)
        return torch.stack([torch.randn(self.dim, generator=g) for g in self.generators])


# run(diffusion, model, x_T, steps, eta, gaussian, noise_fn) -> x_0
SamplerLoop = Callable[..., "torch.Tensor"]


@dataclass(frozen=True)
class Sampler:
    name: str
    help: str
    run: SamplerLoop
    takes_steps: bool  # False: it always runs every diffusion step

    def steps_used(self, diffusion: "GaussianDiffusion", steps: int) -> int:
        """The denoising steps a sample takes (what a voice bank records)."""
        return int(steps) if self.takes_steps else diffusion.num_timesteps

    def is_deterministic(self, eta: float) -> bool:
        """True when a voice is a function of its x_T alone (then it can be decoded again from it, and edited)."""
        return self.takes_steps and eta == 0

    def check_steps(self, diffusion: "GaussianDiffusion", steps: int) -> None:
        if self.takes_steps and not 1 <= steps <= diffusion.num_timesteps:
            raise ValueError(f"--steps must be in 1..{diffusion.num_timesteps}; got {steps}")


SAMPLERS: Dict[str, Sampler] = {}


def register(sampler: Sampler) -> Sampler:
    SAMPLERS[sampler.name] = sampler
    return sampler


def sampler_names() -> Tuple[str, ...]:
    return tuple(SAMPLERS)


def get_sampler(name: str) -> Sampler:
    """The registered sampler of that name; ValueError naming the known ones otherwise."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler '{name}' (known: {', '.join(SAMPLERS)})")
    return SAMPLERS[name]


register(Sampler(
    "ddim", "fast: DDIM on a sub-sequence of the steps (deterministic with eta = 0; the exact Gaussian step "
            "keeps few steps accurate)",
    lambda d, model, x_T, steps, eta, gaussian, noise_fn: d.ddim_sample_loop(
        model, x_T, steps=steps, eta=eta, gaussian=gaussian, noise_fn=noise_fn),
    takes_steps=True))
register(Sampler(
    "ancestral", "DDPM ancestral sampling through every diffusion step (stochastic, slow)",
    lambda d, model, x_T, steps, eta, gaussian, noise_fn: d.p_sample_loop(model, x_T, noise_fn=noise_fn),
    takes_steps=False))


def _padded(x, rows: int):
    """``x`` (a torch tensor or numpy array) with zero rows appended up to ``rows`` rows."""
    if len(x) == rows:
        return x
    if isinstance(x, np.ndarray):
        return np.concatenate([x, np.zeros((rows - len(x), *x.shape[1:]), x.dtype)])
    import torch

    return torch.cat([x, x.new_zeros(rows - len(x), *x.shape[1:])])


def in_blocks(fn: Callable, x, rows: int = BLOCK_ROWS):
    """``fn`` (rows -> rows, torch or numpy) applied to ``x`` in blocks of exactly ``rows`` rows, the last one
    padded with zeros (their results are dropped): each row's result is bitwise independent of the other rows."""
    out = [fn(_padded(x[b:b + rows], rows))[:len(x[b:b + rows])] for b in range(0, len(x), rows)]
    if not out:
        return fn(_padded(x[:0], rows))[:0]
    if isinstance(out[0], np.ndarray):
        return np.concatenate(out)
    import torch

    return torch.cat(out)


def sample(sampler: Sampler, diffusion: "GaussianDiffusion", model: "Denoiser", seeds: Sequence[int], dim: int,
           steps: int, eta: float = 0.0, gaussian=None, rows: int = BLOCK_ROWS,
           temperature: float = 1.0, device=None, rest_temperature: float = 1.0,
           directions=None) -> "torch.Tensor":
    """Samples (model space) for per-voice ``seeds``: x_T from each seed (scaled by ``temperature``: below 1,
    voices nearer the typical ones; outside the network's subspace by ``rest_temperature`` x ``temperature``,
    inside it by ``directions`` x ``temperature``: :func:`~toucan_speakemb.diffusion.gaussian.tempered`),
    stochastic steps from each seed's own step stream, in blocks of ``rows`` rows (see :func:`in_blocks`).
    ``device``: where the model runs (None: the CPU). The noise is always drawn on the CPU, from the same seeds,
    and moved there: a seed gives the same voice on every device, up to the device's float rounding. The samples
    are on ``device``."""
    import torch

    from toucan_speakemb.diffusion.gaussian import tempered

    out = []
    for b in range(0, len(seeds), rows):
        block = seeds[b:b + rows]
        step_noise = VoiceNoise(block, dim, STEP_STREAM)
        x_T = tempered(_padded(VoiceNoise(block, dim).draw().to(device), rows), temperature, gaussian,
                       rest_temperature, directions)
        z = sampler.run(diffusion, model, x_T, steps, eta, gaussian,
                        lambda: _padded(step_noise.draw().to(device), rows))
        out.append(z[:len(block)])
    return torch.cat(out) if out else torch.zeros(0, dim, device=device)

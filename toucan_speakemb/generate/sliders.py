"""Voice sliders: directions in the embedding space that change one property of a voice smoothly.

Every slider works in the model's space (the standardised space the diffusion runs in). A slider first
computes the *move* of each voice (a step along a direction, or a rotation). Moves along a direction stop at
the edge of the training speakers along it (their 1st..99th percentile, or ±2.33 SD of the Gaussian fit when
the speakers are not at hand): a voice already at the low end that is moved further down stays there instead
of leaving the data. The move is then kept on the data manifold in one of two ways (``sample.slider_method``):

- ``latent`` (default): the move is made in the voice's *noise* x_T, the point the deterministic DDIM sampler
  decodes it from, and the moved noise is decoded again. The data move becomes a noise move through the
  model's Gaussian part (:func:`latent_move`: its probability flow keeps every eigen-coordinate's standardised
  value), so for a Gaussian model the edit is exactly the move, and for a trained network the edited voice is a
  sample of the model: it follows the learnt manifold, the way GAN latent editing does. Value 0 gives the
  voice itself. For voices not made by the deterministic DDIM (ancestral sampling, eta > 0, voices from
  elsewhere) the noise is found by DDIM inversion (``sample.slider_inversion_steps``); what the round trip
  misses is added back, so value 0 still gives the voice, and voices the round trip misses by more than
  ``INVERSION_TOLERANCE`` of the speakers' spread are refused (ε-prediction on the cosine schedule cannot be
  inverted: its first decoding step divides every error by √ᾱ ≈ 5e-5). A model without a Gaussian part
  whitens with the training speakers' covariance, its variances floored (``EIGVAL_FLOOR``).
- ``renoise``: the moved voice is re-noised to a moderate diffusion step (``strength`` x T, default
  ``sample.slider_strength`` = 0.3) and denoised by the model (SDEdit, Meng et al. 2022). The noise comes from
  the voice's seed: the same voice, slider and seed always give the same result, and a sweep of slider values
  shares one noise, so value 0 is the sweep's baseline (the voice after the same re-noise/denoise).

Sliders (``NAME=VALUE``):

- ``pcK`` (K = 1, 2, ...): the K-th principal direction of the training speakers; VALUE in standard
  deviations along it (pc1=2 moves a voice two standard deviations along the direction of largest variance).
- ``eigK``: the source presentation's *eigenvector rotation*: the voice's deviation from the mean voice is
  rotated in the plane it spans with the K-th principal direction, towards it, by VALUE degrees. It keeps
  the deviation's length (how unusual the voice is) and turns what makes it unusual towards that direction.
- ``ATTR:VAL`` (e.g. ``gender:f``, ``accent:Scottish``, ``age:25-34``): the difference of the mean of training
  speakers with that value and the mean of the others; VALUE 1 moves a voice by that whole difference.
- ``ATTR`` for an attribute with two values: towards its second value in trained order (``gender`` = towards
  ``m``, from ``f``; the order is printed by :meth:`SliderSpace.names`).

Directions come from the generator file where it holds them (the Gaussian fit's eigenvectors, a conditional
model's per-value means), else from labelled training speakers (the run folder's ``train_speakers``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from toucan_speakemb.core.embedding_set import EmbeddingSet
from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.diffusion.denoisers import gaussian_part
from toucan_speakemb.diffusion.gaussian import noisy_variance
from toucan_speakemb.diffusion.samplers import in_blocks
from toucan_speakemb.training.conditions import ConditionSpec, attribute_column
from toucan_speakemb.training.config import SLIDER_METHODS


@dataclass
class SliderSpace:
    mean: np.ndarray                  # (d,) mean training speaker (model space)
    eigvecs: np.ndarray               # (d, d) principal directions as columns, largest variance first
    eigvals: np.ndarray               # (d,) variances along them
    groups: Dict[str, Tuple[List[str], np.ndarray, np.ndarray]] = field(default_factory=dict)
    # attribute -> (values, (v, d) means per value, (v,) counts)
    rows: Optional[np.ndarray] = None  # the training speakers (model space), when known: ranges along directions

    # ---- construction -----------------------------------------------------------------------------
    @classmethod
    def from_rows(cls, z: np.ndarray, labelled=None, attributes: Sequence[str] = (),
                  age_edges: Sequence[float] = (25, 35, 50, 65)) -> "SliderSpace":
        """From training rows ``z`` (n, d) in the model's space; ``labelled`` (an EmbeddingSet of the same
        rows) gives attribute directions for ``attributes`` (default: every attribute it carries)."""
        z = np.asarray(z, np.float64)
        mean = z.mean(0)
        vals, vecs = np.linalg.eigh(np.cov(z, rowvar=False))
        space = cls(mean, vecs[:, ::-1].copy(), np.clip(vals[::-1], 0, None).copy(), rows=z)
        if labelled is not None:
            names = list(attributes) or ["gender", "age", "accent", *sorted(labelled.labels or {})]
            for a in names:
                col = attribute_column(labelled, a, age_edges)
                if not col:
                    continue
                col = np.array(col)
                values = sorted(set(col[col != ""]))
                if len(values) >= 2:
                    space.groups[a] = (values, np.stack([z[col == v].mean(0) for v in values]),
                                       np.array([(col == v).sum() for v in values]))
        return space

    @classmethod
    def from_generator(cls, generator, data=None) -> "SliderSpace":
        """Directions for ``generator``: from ``data`` (an EmbeddingSet of its training speakers, raw space),
        else from the generator file (principal directions of its Gaussian part; a conditional model's
        per-value means) and, for attribute sliders of an unconditional model, the run folder's training
        speakers when they are beside the generator file."""
        if data is None and generator.path is not None:
            beside = Path(generator.path).parent / "train_speakers.safetensors"
            if beside.exists():
                data = EmbeddingSet.load(beside)
        model = generator.model
        if data is not None:
            z = generator.standardizer.forward(data.embeddings)
            space = cls.from_rows(z, data, age_edges=generator.conditions.age_edges or generator.cfg.model.age_bands)
        elif gaussian_part(model) is not None:
            part = gaussian_part(model)
            vals = part.eigvals.double().cpu().numpy()
            order = np.argsort(vals)[::-1]
            space = cls(part.mean.double().cpu().numpy(), part.eigvecs.double().cpu().numpy()[:, order], vals[order])
        else:
            raise SpeakEmbError("sliders need the training speakers: give data= (an EmbeddingSet), or keep "
                                "train_speakers.safetensors beside the generator file")
        spec: ConditionSpec = generator.conditions
        for a in spec.attributes:
            if a not in space.groups and a in generator.condition_means:
                space.groups[a] = (spec.values[a], np.asarray(generator.condition_means[a], np.float64),
                                   np.asarray(spec.counts[a]))
        return space

    # ---- directions -------------------------------------------------------------------------------
    def names(self) -> List[str]:
        out = [f"pc1..pc{len(self.eigvals)}", f"eig1..eig{len(self.eigvals)}"]
        for a, (values, _, _) in self.groups.items():
            out += [f"{a}:{v}" for v in values]
            if len(values) == 2:
                out.append(f"{a} (towards {values[1]}, from {values[0]})")
        return out

    def attribute_direction(self, name: str) -> np.ndarray:
        """Mean of the value minus the (count-weighted) mean of the other values, in the model space."""
        attr, _, value = name.partition(":")
        if attr not in self.groups:
            known = ", ".join(self.groups) or "none (the training speakers carry no attributes)"
            raise SpeakEmbError(f"unknown slider '{name}' (sliders: pcK, eigK; attributes: {known})")
        values, means, counts = self.groups[attr]
        if not value:
            if len(values) != 2:
                raise SpeakEmbError(f"slider '{attr}' has {len(values)} values; name one, e.g. {attr}:{values[0]}")
            value = values[1]
        match = [i for i, v in enumerate(values) if v.lower() == value.lower()]
        if not match:
            raise SpeakEmbError(f"slider '{name}': {attr} has no value '{value}' (values: {', '.join(values)})")
        i = match[0]
        others = np.arange(len(values)) != i
        return means[i] - (counts[others] @ means[others]) / counts[others].sum()

    def _pc(self, name: str, k: int) -> int:
        if not 1 <= k <= len(self.eigvals):
            raise SpeakEmbError(f"slider '{name}': there are principal directions 1..{len(self.eigvals)}")
        return k - 1

    def move(self, z: np.ndarray, sliders: Mapping[str, float]) -> np.ndarray:
        """The voices ``z`` (n, d, model space) moved by the sliders, in the order given (no re-noising)."""
        z = np.array(z, np.float64, ndmin=2)
        for name, value in sliders.items():
            value = float(value)
            m = re.fullmatch(r"(pc|eig)(\d+)", name)
            if m and m.group(1) == "eig":
                z = self.mean + rotate_towards(z - self.mean, self.eigvecs[:, self._pc(name, int(m.group(2)))],
                                               np.deg2rad(value))
                continue
            if m:
                k = self._pc(name, int(m.group(2)))
                step = value * np.sqrt(self.eigvals[k]) * self.eigvecs[:, k]
            else:
                step = value * self.attribute_direction(name)
            z = self._move_within_range(z, step)
        return z

    def _move_within_range(self, z: np.ndarray, step: np.ndarray) -> np.ndarray:
        """z + step, except that the coordinate along the step stops at the edge of the training speakers
        (voices already beyond the edge are not moved further out, nor pulled back)."""
        length = float(np.linalg.norm(step))
        if length == 0:
            return z
        u = step / length
        if self.rows is not None:
            hi = np.quantile((self.rows - self.mean) @ u, 0.99)  # the step points along u: only the far edge
        else:
            sd = float(np.sqrt((self.eigvecs.T @ u) ** 2 @ self.eigvals))
            hi = 2.33 * sd
        s = (z - self.mean) @ u
        target = np.minimum(s + length, np.maximum(hi, s))
        return z + (target - s)[:, None] * u

    def score(self, z: np.ndarray, name: str) -> np.ndarray:
        """Each voice's coordinate along a slider's direction (standard deviations for pcK / eigK; units of
        the attribute's mean difference for attributes), for checking that a slider moves what it says."""
        z = np.asarray(z, np.float64)
        m = re.fullmatch(r"(pc|eig)(\d+)", name)
        if m:
            k = self._pc(name, int(m.group(2)))
            return (z - self.mean) @ self.eigvecs[:, k] / np.sqrt(max(self.eigvals[k], 1e-12))
        d = self.attribute_direction(name)
        return (z - self.mean) @ d / (d @ d)


def rotate_towards(c: np.ndarray, u: np.ndarray, angle: float) -> np.ndarray:
    """Rotate each row of ``c`` by ``angle`` (radians) in the plane it spans with ``u``, towards ``u``.
    Lengths are kept; a row parallel to ``u`` has no such plane and is left as it is."""
    norm = np.linalg.norm(c, axis=1, keepdims=True)
    chat = c / np.maximum(norm, 1e-12)
    perp = u[None, :] - (chat @ u)[:, None] * chat
    pn = np.linalg.norm(perp, axis=1, keepdims=True)
    ok = pn[:, 0] > 1e-9
    out = c.copy()
    out[ok] = norm[ok] * (np.cos(angle) * chat[ok] + np.sin(angle) * perp[ok] / pn[ok])
    return out


def parse_sliders(items: Sequence[str]) -> Dict[str, float]:
    """``["pc1=2", "gender:f=0.5"]`` -> {"pc1": 2.0, "gender:f": 0.5}; bad items raise SpeakEmbError."""
    out: Dict[str, float] = {}
    for item in items:
        name, eq, value = item.rpartition("=")
        if not eq or not name.strip():
            raise SpeakEmbError(f"bad slider '{item}': expected NAME=VALUE, e.g. pc1=2 or gender:f=1")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise SpeakEmbError(f"bad slider '{item}': '{value}' is not a number") from None
    return out


# latent sliders on inverted voices: the largest round-trip error (RMS, in units of the speakers' spread) taken
INVERSION_TOLERANCE = 0.25
# models without a Gaussian part: variance floor of the whitening, relative to the mean variance
EIGVAL_FLOOR = 1e-2


def apply_sliders(generator, voices: np.ndarray, seeds: Sequence[int], sliders: Mapping[str, float],
                  strength: Optional[float] = None, conditions=None, guidance: Optional[float] = None,
                  space: Optional[SliderSpace] = None, method: Optional[str] = None, latents=None,
                  steps: Optional[int] = None) -> np.ndarray:
    """Voices (n, d, embedding space) with the sliders applied, kept on the data manifold by ``method``
    (default ``sample.slider_method``; with ``conditions`` the decoding / denoising is conditional):

    - ``latent``: the move is made in the voices' noise (``latents``, their x_T for ``steps`` DDIM steps when
      known, else found by DDIM inversion) and decoded again (:func:`latent_move`);
    - ``renoise``: the moved voices are re-noised to ``strength`` x T (noise from each voice's seed) and
      denoised (SDEdit).

    Returns (n, d) in the embedding space."""
    voices = np.asarray(voices, np.float32)
    if voices.ndim != 2 or voices.shape[1] != generator.dim:
        raise SpeakEmbError(f"sliders: voices of shape {voices.shape} do not fit this generator "
                            f"({generator.dim}-dim profile '{generator.profile.name}')")
    if len(seeds) != len(voices):
        raise SpeakEmbError(f"{len(voices)} voices but {len(seeds)} seeds")
    method = slider_method_of(generator, method, strength)
    space = space or SliderSpace.from_generator(generator)
    z = generator.standardizer.forward(voices).astype(np.float64)
    moved = space.move(z, sliders)
    if method == "renoise":
        z = generator.renoise_denoise(moved.astype(np.float32), seeds, strength, conditions=conditions,
                                      guidance=guidance)
        return generator.standardizer.inverse(z)
    T = generator.diffusion.num_timesteps
    if latents is not None and steps is None:
        raise SpeakEmbError("latents need the number of DDIM steps the voices were sampled with (steps=)")
    if steps is not None and not 1 <= int(steps) <= T:
        raise SpeakEmbError(f"slider steps must be in 1..{T}; got {steps}")
    residual = 0.0
    if latents is None:
        steps = generator.inversion_steps if steps is None else int(steps)
        latents = generator.invert(z, steps, conditions=conditions, guidance=guidance)
        back = generator.decode(latents, steps, conditions=conditions, guidance=guidance)
        # what the inversion does not reproduce is kept as it is (value 0 gives the voice back exactly), but a
        # round trip far off means the decoded edits would be too (e.g. ε-prediction where ᾱ_T ≈ 0 magnifies
        # every error of the inversion): refuse rather than return wrong voices
        spread = float(np.sqrt(np.mean(np.maximum(space.eigvals, 0)))) or 1.0
        off = float(np.sqrt(np.mean((back - z) ** 2))) / spread
        if not off <= INVERSION_TOLERANCE:
            raise SpeakEmbError(f"latent sliders: DDIM inversion does not reproduce these voices with this generator "
                                f"(round trip off by {off:.2g} of the speakers' spread, {steps} steps); use "
                                f"--slider-method renoise")
        residual = z - back
    start = float(generator.diffusion.alphas_cumprod[generator.diffusion.ddim_timesteps(T, int(steps))[0]])
    eigvecs, eigvals = _covariance_of(generator, space)
    lat = np.asarray(latents, np.float64) + in_blocks(lambda dz: latent_move(dz, eigvecs, eigvals, start), moved - z)
    out = generator.decode(lat, int(steps), conditions=conditions, guidance=guidance) + residual
    return generator.standardizer.inverse(out.astype(np.float32))


def check_sliders(generator, sliders: Mapping[str, float], method: Optional[str] = None,
                  strength: Optional[float] = None) -> str:
    """Refuse unknown sliders and bad settings (one line each) before any sampling; returns the method."""
    generator.slider_space().move(generator.slider_space().mean, sliders)
    return slider_method_of(generator, method, strength)


def slider_method_of(generator, method: Optional[str] = None, strength: Optional[float] = None) -> str:
    """The slider method to use (default the generator's ``sample.slider_method``); a strength is refused with
    the latent method, where it would do nothing."""
    method = generator.cfg.sample.slider_method if method is None else method
    if method not in SLIDER_METHODS:
        raise SpeakEmbError(f"unknown slider method '{method}' (known: {', '.join(SLIDER_METHODS)})")
    if method == "latent" and strength is not None:
        raise SpeakEmbError("slider strength belongs to the renoise slider method; latent sliders decode the whole "
                            "way from noise (choose --slider-method renoise to set a strength)")
    return method


def latent_move(dz: np.ndarray, eigvecs: np.ndarray, eigvals: np.ndarray, abar: float) -> np.ndarray:
    """The move of noise at level ᾱ = ``abar`` that the probability-flow ODE of N(μ, V diag(λ) Vᵀ) carries to
    the move ``dz`` (n, d) of its data: the flow keeps each eigen-coordinate's standardised value
    (:func:`~toucan_speakemb.diffusion.gaussian.gaussian_flow_step`), so a data move of δ along an eigenvector
    is a noise move of δ √((ᾱλ + 1 - ᾱ) / λ) (at pure noise, δ / √λ: the whitened move).

    For a Gaussian model, decoding the moved noise gives exactly the moved voice; for a trained network, a
    voice decoded from moved noise is a sample of the model, so the edit follows the learnt manifold instead of
    a straight line off it."""
    lam = np.maximum(np.asarray(eigvals, np.float64), 1e-12 * max(float(np.max(eigvals)), 1e-300))
    gain = np.sqrt(noisy_variance(abar, lam) / lam)
    return ((np.asarray(dz, np.float64) @ eigvecs) * gain) @ np.ascontiguousarray(eigvecs.T)  # see gaussian_flow_step


def _covariance_of(generator, space: SliderSpace):
    """Eigen-decomposition whose flow the latent move inverts: the model's own Gaussian part when it has one
    (then a Gaussian model's edits are exact), else the training speakers' covariance."""
    part = gaussian_part(generator.model)
    if part is not None:
        return part.eigvecs.double().cpu().numpy(), part.eigvals.double().cpu().numpy()
    # no Gaussian of its own: directions the speakers (nearly) do not vary along (fewer speakers than
    # dimensions) would turn a small move into a huge one in the noise; floor their variance
    return space.eigvecs, np.maximum(space.eigvals, EIGVAL_FLOOR * float(np.mean(space.eigvals)))

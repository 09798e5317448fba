"""Generator: a trained run, loaded for sampling new voices.

Each voice has its own 63-bit seed and depends only on it and the generator's weights: it can be re-made
alone, in any batch, by id, bit for bit (its noise comes from its own seed and every computation runs in
blocks of one fixed shape: :mod:`toucan_speakemb.diffusion.samplers`). Stochastic samplers draw each voice's
noise from its own seed too.

A generator runs on one torch device (``Generator.load(path, device="auto")``: ``cuda:LOCAL_RANK`` when CUDA
is there, else ``cpu``; :meth:`Generator.to`). Every noise is drawn on the CPU from the voice's seeds and moved
to the device, and the voices come back to the CPU as numpy arrays: a seed gives the same voice on every device
up to the device's float rounding, and on the CPU bit for bit. Across versions the same holds up to float
rounding only: since the sampler runs in the Gaussian's eigenbasis (a generator with a principal subspace, the
default), voices differ from earlier versions' in the last bits (up to about 4e-5 on values up to 20).

A generator trained with conditions (``model.conditions``) samples unconditionally as before, or with
``conditions={"gender": "f"}`` and classifier-free guidance ``guidance`` w (Ho & Salimans 2022):
prediction = uncond + w (cond - uncond), so w = 0 is the unconditional model, w = 1 the plain conditional one
and w > 1 pushes further towards the condition (default ``sample.guidance``). Voices edited with sliders are
moved in their noise x_T and decoded again (:meth:`Generator.decode`, :meth:`Generator.invert`), or re-noised
and denoised (:meth:`Generator.renoise_denoise`); see toucan_speakemb/generate/sliders.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from toucan_speakemb.training.conditions import ConditionSpec
from toucan_speakemb.training.config import TrainConfig
from toucan_speakemb.diffusion.denoisers import gaussian_part
from toucan_speakemb.diffusion.gaussian import eigen_subspace, tempered
from toucan_speakemb.generate.request import SamplingRequest
from toucan_speakemb.generate.sliders import SliderSpace, apply_sliders, check_sliders
from toucan_speakemb.diffusion.samplers import RENOISE_STREAM, VoiceNoise, get_sampler, in_blocks, sample as run_sampler
from toucan_speakemb.core.distributed import resolve_device
from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.core.fileio import load_tensors
from toucan_speakemb.core.profiles import Profile
from toucan_speakemb.diffusion.standardize import Standardizer
from toucan_speakemb.training.trainer import (GENERATOR_KIND, FORMAT_VERSION, TEMPERATURE_RANGE, build_diffusion,
                                              build_model, model_device)


def check_noise_record(record: Any, k: Optional[int], path: Any) -> None:
    """Refuse a generator file whose temperature record (how the initial noise is scaled) is damaged: not a
    mapping, or direction factors that are not a list of one number in 0.001..1000 per principal direction of
    its network (``k``; None: it has none)."""
    if record is None:
        return
    if not isinstance(record, dict):
        raise SpeakEmbError(f"generator {path} is damaged: its temperature record is not a mapping "
                            f"({str(record)[:40]})")
    scales = record.get("direction_scales")
    if scales is None:
        return
    fine = (isinstance(scales, list) and len(scales) == (k or 0) and
            all(isinstance(f, (int, float)) and not isinstance(f, bool) and 1e-3 < f < 1e3 for f in scales))
    if not fine:
        raise SpeakEmbError(f"generator {path} is damaged: its direction factors must be a list of {k or 0} numbers "
                            f"in 0.001..1000, one per principal direction of its network; got {str(scales)[:60]}")


def voice_seeds(seed: int, n: int) -> np.ndarray:
    """n distinct per-voice seeds derived from one bank seed (SeedSequence: no overlap between bank seeds)."""
    if not 0 <= int(seed) < 2**63:
        raise SpeakEmbError(f"seed must be in 0..2^63-1; got {seed}")
    state = np.random.SeedSequence(int(seed)).generate_state(2 * n, dtype=np.uint32).astype(np.uint64)
    seeds = ((state[0::2] << np.uint64(31)) ^ state[1::2]) & np.uint64((1 << 63) - 1)
    return seeds.astype(np.int64)


class Generator:
    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, standardizer: Standardizer, profile: Profile,
                 meta: Dict, fingerprint: str, path: Optional[Path] = None,
                 condition_means: Optional[Dict[str, np.ndarray]] = None):
        self.model, self.cfg, self.standardizer, self.profile = model.eval(), cfg, standardizer, profile
        self.meta, self.fingerprint, self.path = meta, fingerprint, path
        self.diffusion = build_diffusion(cfg)
        self._train_means: Optional[np.ndarray] = None
        self._train_ids: List[str] = list(meta.get("train_speaker_ids") or [])
        # the trained attributes and values (empty for an unconditional generator)
        self.conditions = ConditionSpec.from_json(meta.get("conditions"))
        # per attribute: (values, d) means of the training rows in the model's space, for attribute sliders
        self.condition_means = condition_means or {}

    @property
    def dim(self) -> int:
        return self.profile.dim

    @property
    def device(self) -> torch.device:
        """The torch device the model runs on."""
        return model_device(self.model)

    def to(self, device: str = "auto") -> "Generator":
        """Move the model to ``device`` (auto, cpu, cuda, cuda:<i>; see core/distributed.resolve_device);
        returns the generator. Voices keep their seeds: only float rounding differs between devices."""
        self.model.to(resolve_device(device))
        return self

    @property
    def same_speaker_threshold(self) -> Optional[float]:
        """Cosine above which two embeddings are one speaker (EER point over the training utterances), or
        None when training could not compute it (one embedding per speaker) or the file predates it."""
        v = (self.meta.get("same_speaker_threshold") or {}).get("value")
        return None if v is None else float(v)

    @property
    def temperature(self) -> float:
        """Default scale of the initial noise x_T (``temperature`` of :meth:`sample_seeds`): the one stored with
        the generator (chosen at training time on training speakers alone), else 1.0 (plain sampling)."""
        return float((self.meta.get("temperature") or {}).get("value") or 1.0)

    @property
    def rest_temperature(self) -> float:
        """The ratio of the temperature the directions outside the network's subspace sample at
        (``sample.rest_temperature`` as the run applied it, stored with the temperature); 1.0 for a generator
        made before it existed or one that kept the Gaussian fit."""
        return float((self.meta.get("temperature") or {}).get("rest_temperature") or 1.0)

    @property
    def direction_scales(self) -> Optional[List[float]]:
        """The factors of the initial noise along each direction of the network's principal subspace
        (``sample.variance_correction`` as the run applied it, stored with the temperature; see
        :func:`toucan_speakemb.diffusion.gaussian.variance_scales`), or None: a generator made before they
        existed, one without a principal subspace, one that kept the Gaussian fit, one whose run chose no
        temperature, or one trained with ``sample.variance_correction`` 0."""
        scales = (self.meta.get("temperature") or {}).get("direction_scales")
        return None if scales is None else [float(s) for s in scales]

    def training_speakers(self) -> Tuple[np.ndarray, List[str]]:
        """The training speakers' mean embeddings (n, d) and ids, stored in the generator file.

        A file from before they were stored falls back to ``train_speakers.safetensors`` of its run folder.
        """
        if self._train_means is None:
            fallback = self.path.parent / "train_speakers.safetensors" if self.path else None
            if fallback is None or not fallback.exists():
                raise SpeakEmbError(f"generator {self.path} holds no training speakers (made by an older version) "
                                    f"and no train_speakers.safetensors is next to it; retrain to check novelty")
            from toucan_speakemb.core.embedding_set import EmbeddingSet

            es = EmbeddingSet.load(fallback)
            self.profile.check_same(es.profile, f"generator {self.path}", str(fallback))
            self._train_means, self._train_ids = es.embeddings, es.speaker_ids
        return self._train_means, self._train_ids

    @property
    def model_dim(self) -> int:
        """Dimension the diffusion runs in (the data's, + 1 with the polar transform)."""
        return self.standardizer.model_dim

    @classmethod
    def load(cls, path: Union[str, Path], device: str = "auto") -> "Generator":
        """Load from a run folder (its ``generator.safetensors``) or the file itself, onto ``device`` (auto: the
        GPU of this process's LOCAL_RANK when CUDA is there, else cpu). The file holds CPU tensors only, so a
        generator trained on a GPU loads on any machine."""
        device = resolve_device(device)  # a device this torch cannot use fails before the file is read
        path = Path(path)
        if path.is_dir():
            if not (path / "generator.safetensors").exists():
                hint = " (training has not finished; resume it with the same train command)" if (
                    path / "checkpoints").exists() else ""
                raise SpeakEmbError(f"{path} holds no generator.safetensors{hint}")
            path = path / "generator.safetensors"
        arrays, meta = load_tensors(path, "generator", kind=GENERATOR_KIND, format_version=FORMAT_VERSION)
        try:
            cfg = TrainConfig.of_file(meta["config"], f"{path} config")
            profile = Profile.from_json(meta["profile"])
            spec = ConditionSpec.from_json(meta.get("conditions"))
            st = Standardizer.from_arrays(arrays)
            if st.dim != profile.dim:
                raise SpeakEmbError(f"generator {path}: statistics are {st.dim}-dim, profile is {profile.dim}-dim")
            basis = arrays.get("model.basis")
            model = build_model(cfg, st.model_dim, spec, None if basis is None else basis.shape[1])
            cmeans = {a: arrays[f"conditions.{a}.means"] for a in spec.attributes}
            sd = {k[len("model."):]: torch.from_numpy(v.copy()) for k, v in arrays.items() if k.startswith("model.")}
            model.load_state_dict(sd)
        except (KeyError, RuntimeError) as e:
            raise SpeakEmbError(f"generator {path} is damaged or incomplete ({str(e).splitlines()[0][:160]})") from None
        h = hashlib.sha256()
        for k in sorted(arrays):
            h.update(k.encode())
            h.update(np.ascontiguousarray(arrays[k]).tobytes())
        g = cls(model, cfg, st, profile, meta, h.hexdigest()[:16], path, cmeans)
        check_noise_record(meta.get("temperature"), eigen_subspace(gaussian_part(model)), path)
        if "train_speakers.means" in arrays:
            means = arrays["train_speakers.means"]
            if means.ndim != 2 or means.shape[1] != profile.dim or len(g._train_ids) != len(means):
                raise SpeakEmbError(f"generator {path}: its training speakers are damaged ({means.shape}, "
                                    f"{len(g._train_ids)} ids)")
            g._train_means = means
        return g.to(device)

    # ---- sampling ---------------------------------------------------------------------------------
    def initial_noise(self, seeds: Sequence[int]) -> torch.Tensor:
        """x_T for each voice from its own seed (on the CPU, whatever the generator's device)."""
        return VoiceNoise(seeds, self.model_dim).draw()

    def guided(self, conditions: Optional[Mapping[str, Any]] = None, guidance: Optional[float] = None):
        """The denoiser to sample with: the model itself, or for a request of conditions the model with
        classifier-free guidance (unknown attributes or values raise SpeakEmbError naming the trained ones).
        Either way with the autoguidance of ``sample.autoguidance``."""
        part = gaussian_part(self.model)
        if part is not None:
            part.correction_scale = float(self.cfg.sample.autoguidance)
        if not any(v is not None for v in (conditions or {}).values()):
            return self.model
        if not self.conditions:
            names = ", ".join(k for k, v in conditions.items() if v is not None)
            raise SpeakEmbError(f"this generator was trained without conditions, so it cannot sample by {names}; "
                                f"train one with model.conditions=[{names}]")
        w = self.cfg.sample.guidance if guidance is None else float(guidance)
        if not w >= 0:
            raise SpeakEmbError(f"guidance must be at least 0; got {guidance}")
        codes = torch.from_numpy(self.conditions.encode_request(conditions)).to(self.device)
        return GuidedDenoiser(self.model, codes, w)

    @torch.no_grad()
    def sample_seeds(self, seeds: Sequence[int], request: Optional[SamplingRequest] = None,
                     batch_size: Optional[int] = None, **settings) -> np.ndarray:
        """Embeddings (n, d) in the data space for the given per-voice seeds, sampled as ``request`` asks
        (:class:`~toucan_speakemb.generate.request.SamplingRequest`; or its fields as keyword arguments:
        ``conditions``, ``guidance``: conditional sampling, see the module's docstring; ``sliders`` with
        ``slider_method`` and ``slider_strength``: the voices edited, see toucan_speakemb/generate/sliders.py;
        ``temperature``: the initial noise x_T is multiplied by it, outside the network's subspace by
        :attr:`rest_temperature` x it, inside it by :attr:`direction_scales` x it (below 1: voices nearer the
        population's typical ones, more precise and less varied; above 1: more varied), default
        :attr:`temperature`;
        ``sampler``, ``steps``, ``eta``). ``batch_size`` bounds the memory only: voices do not depend on it."""
        if request is not None and settings:
            raise TypeError("give a SamplingRequest or its fields as keywords, not both")
        req = request if request is not None else SamplingRequest.of(**settings)
        temperature = self.check_temperature(req.temperature)
        if req.sliders:  # bad slider names and settings fail before the sampling work
            check_sliders(self, req.sliders, req.slider_method, req.slider_strength)
        model = self.guided(req.conditions, req.guidance)
        sc = self.cfg.sample
        sampler = sc.sampler if req.sampler is None else req.sampler
        steps = sc.steps if req.steps is None else req.steps
        eta = sc.eta if req.eta is None else req.eta
        batch_size = sc.batch_size if batch_size is None else batch_size
        if batch_size < 1:
            raise SpeakEmbError(f"batch size must be at least 1; got {batch_size}")
        try:
            method = get_sampler(sampler)
            method.check_steps(self.diffusion, steps)
        except ValueError as e:
            raise SpeakEmbError(str(e)) from None
        seeds = [int(s) for s in seeds]
        out = []
        for b in range(0, len(seeds), batch_size):
            # x_T (times the temperature) and the noise of stochastic steps come from each voice's own seed, so a
            # voice never depends on the batch it is sampled in
            z = run_sampler(method, self.diffusion, model, seeds[b:b + batch_size], self.model_dim, steps, eta,
                            gaussian_part(model), temperature=temperature, device=self.device,
                            rest_temperature=self.rest_temperature, directions=self.direction_scales)
            out.append(self.standardizer.inverse(z.cpu().numpy()))
        x = np.concatenate(out, axis=0) if out else np.zeros((0, self.dim), np.float32)
        if req.sliders:
            latents, known_steps = self.known_latents(seeds, sampler, steps, eta, temperature)
            x = self.edit(x, seeds, req.sliders, req.slider_strength, req.conditions, req.guidance,
                          method=req.slider_method, latents=latents, steps=known_steps)
        return x

    def sample(self, n: int, seed: int = 0, request: Optional[SamplingRequest] = None, **settings) -> np.ndarray:
        """n new voices from one seed: ``sample(n, seed)`` always gives the same (n, d) array.

        ``conditions={"gender": "f"}``, ``guidance=2.0``: conditional sampling (conditional generators);
        ``sliders={"pc1": 2.0}``: the voices edited with sliders (toucan_speakemb/generate/sliders.py); any
        field of :class:`~toucan_speakemb.generate.request.SamplingRequest`, or the request itself."""
        if n < 1:
            raise SpeakEmbError(f"number of voices must be at least 1; got {n}")
        return self.sample_seeds(voice_seeds(seed, n), request, **settings)

    def temperature_knob(self, seed: int = 0):
        """This generator as a system with a novelty knob, for ``evaluate(knob_systems=...)``: (sample(t, n) ->
        n voices of ``seed`` at temperature t, the knob's name, the range the default temperature is chosen
        in). The report then shows it at the held-out speakers' novelty and along the precision-novelty curve."""
        return (lambda t, n: self.sample(n, seed, temperature=t)), "temperature", TEMPERATURE_RANGE

    def edit(self, voices: np.ndarray, seeds: Sequence[int], sliders: Mapping[str, float],
             strength: Optional[float] = None, conditions: Optional[Mapping[str, Any]] = None,
             guidance: Optional[float] = None, method: Optional[str] = None,
             latents: Optional[torch.Tensor] = None, steps: Optional[int] = None) -> np.ndarray:
        """``voices`` (n, d) with sliders applied, kept on the data manifold (see toucan_speakemb/generate/sliders.py).
        ``latents``, ``steps``: the voices' noise and DDIM steps when known (:meth:`known_latents`); else the
        latent method finds them by DDIM inversion."""
        return apply_sliders(self, voices, seeds, sliders, strength, conditions, guidance, self.slider_space(),
                             method=method, latents=latents, steps=steps)

    def check_temperature(self, temperature: Optional[float]) -> float:
        """``temperature``, or the generator's default when None; refuses a non-positive one."""
        t = self.temperature if temperature is None else float(temperature)
        if not (np.isfinite(t) and t > 0):
            raise SpeakEmbError(f"temperature must be a number above 0; got {temperature}")
        return t

    def known_latents(self, seeds: Sequence[int], sampler: Optional[str] = None, steps: Optional[int] = None,
                      eta: Optional[float] = None,
                      temperature: Optional[float] = None) -> Tuple[Optional[torch.Tensor], Optional[int]]:
        """(x_T, DDIM steps) of voices sampled from ``seeds`` with these settings when the sampler is the
        deterministic DDIM (the voice is then exactly ``decode(x_T, steps)``), else (None, None)."""
        sc = self.cfg.sample
        sampler = sc.sampler if sampler is None else sampler
        eta = sc.eta if eta is None else eta
        if not get_sampler(sampler).is_deterministic(eta):
            return None, None
        t, part = self.check_temperature(temperature), gaussian_part(self.model)
        # as run_sampler tempers it: on the model's device, in blocks of one shape (a voice's x_T never depends
        # on the others)
        rest, directions = self.rest_temperature, self.direction_scales
        x_T = in_blocks(lambda x: tempered(x.to(self.device), t, part, rest, directions).cpu(),
                        self.initial_noise(seeds))
        return x_T, (sc.steps if steps is None else int(steps))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, steps: Optional[int] = None,
               conditions: Optional[Mapping[str, Any]] = None, guidance: Optional[float] = None) -> np.ndarray:
        """Deterministic DDIM from noise ``latents`` (n, model_dim) to voices in the model's space."""
        model = self.guided(conditions, guidance)
        steps = self.cfg.sample.steps if steps is None else int(steps)
        return in_blocks(lambda x: self.diffusion.ddim_sample_loop(model, x, steps=steps, gaussian=gaussian_part(model)),
                         torch.as_tensor(latents, dtype=torch.float32).to(self.device)).cpu().numpy()

    @property
    def inversion_steps(self) -> int:
        """DDIM steps of :meth:`invert` by default (``sample.slider_inversion_steps``, at most T)."""
        return min(self.cfg.sample.slider_inversion_steps, self.diffusion.num_timesteps)

    @torch.no_grad()
    def invert(self, z: np.ndarray, steps: Optional[int] = None, conditions: Optional[Mapping[str, Any]] = None,
               guidance: Optional[float] = None) -> torch.Tensor:
        """DDIM inversion: the noise that :meth:`decode` with the same ``steps`` maps back to ≈ ``z`` (n, d,
        model space; on the CPU); exact for the Gaussian part, first-order accurate in ``steps`` for the network's."""
        model = self.guided(conditions, guidance)
        steps = self.inversion_steps if steps is None else int(steps)
        ts = self.diffusion.ddim_timesteps(self.diffusion.num_timesteps, steps)
        return in_blocks(lambda x: self.diffusion.ddim_invert_loop(model, x, timesteps=ts, gaussian=gaussian_part(model)),
                         torch.as_tensor(np.asarray(z, np.float32)).to(self.device)).cpu()

    def slider_space(self):
        """The slider directions of this generator (:class:`toucan_speakemb.generate.sliders.SliderSpace`)."""
        if getattr(self, "_slider_space", None) is None:
            self._slider_space = SliderSpace.from_generator(self)
        return self._slider_space

    @torch.no_grad()
    def renoise_denoise(self, z: np.ndarray, seeds: Sequence[int], strength: Optional[float] = None,
                        steps: Optional[int] = None, conditions: Optional[Mapping[str, Any]] = None,
                        guidance: Optional[float] = None) -> np.ndarray:
        """SDEdit (Meng et al. 2022) in the model's space: noise each row of ``z`` (n, d) to the diffusion step
        ``strength`` x T (noise from its own seed) and denoise it with deterministic DDIM, so that a vector a
        little off the data manifold is brought back onto it while keeping what the noise did not wash out."""
        strength = self.cfg.sample.slider_strength if strength is None else float(strength)
        if not 0 < strength <= 1:
            raise SpeakEmbError(f"slider strength must be in (0, 1]; got {strength}")
        model = self.guided(conditions, guidance)
        T = self.diffusion.num_timesteps
        start = max(1, int(round(strength * T)))
        steps = steps or max(2, int(np.ceil(self.cfg.sample.steps * strength)))
        ts = self.diffusion.ddim_timesteps(T, min(steps, start), start=start)
        z = torch.as_tensor(np.asarray(z, np.float32)).to(self.device)
        x_t = self.diffusion.q_sample(z, torch.full((len(z),), int(ts[0]), dtype=torch.long, device=self.device),
                                      VoiceNoise(seeds, self.model_dim, RENOISE_STREAM).draw().to(self.device))
        return in_blocks(lambda x: self.diffusion.ddim_sample_loop(model, x, timesteps=ts, gaussian=gaussian_part(model)),
                         x_t).cpu().numpy()

    def describe(self) -> Dict:
        out = {"path": str(self.path) if self.path else None, "fingerprint": self.fingerprint,
               "profile": self.profile.name, "dim": self.dim, "trained_steps": self.meta.get("trained_steps"),
               "schedule": self.cfg.diffusion.schedule, "model": self.cfg.model.kind,
               "level": self.cfg.data.level, "same_speaker_threshold": self.same_speaker_threshold}
        if self.conditions:
            out["conditions"] = dict(self.conditions.values)
        return out


class GuidedDenoiser:
    """``model(x, t)`` of a conditional network for fixed condition codes with classifier-free guidance:
    out = out(null) + w (out(codes) - out(null)), both halves of the network in one batch.

    With a Gaussian-residual model the two Gaussian parts share their covariance and differ in the mean
    (μ vs μ + offset), and a Gaussian's prediction is affine in its mean, so their guided combination is
    exactly the prediction of the Gaussian of mean μ + w·offset: the DDIM step takes it exactly for every w
    (``correction``, ``mean``, ``eigvecs`` and ``eigvals`` are what :meth:`GaussianDiffusion.ddim_sample_loop` uses;
    ``eigen_subspace`` and ``correction_in_eigenbasis`` let it run in the eigenbasis).
    """

    def __init__(self, model: torch.nn.Module, codes: torch.Tensor, guidance: float):
        self.residual = gaussian_part(model)
        # the network part of the prediction (with a principal subspace: through it)
        self._net = model.correction if self.residual is not None else model
        self.codes, self.guidance = codes.reshape(1, -1).long(), float(guidance)
        if self.residual is not None:
            self.mean = model.condition_mean(self.codes[0], self.guidance)
            self.eigvecs, self.eigvals = model.eigvecs, model.eigvals

    def gaussian_part(self):
        """This guided denoiser, when the model has a Gaussian part (see denoisers.gaussian_part)."""
        return self if self.residual is not None else None

    def correction(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The guided network part (for a Gaussian-residual model: the guided correction to its Gaussian)."""
        return self._guided(self._net, x, t)

    def eigen_subspace(self):
        """As the model's (:meth:`GaussianResidual.eigen_subspace`): the sampler may run in the eigenbasis."""
        return self.residual.eigen_subspace()

    def correction_in_eigenbasis(self, c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """:meth:`correction` in the eigenbasis (:meth:`GaussianResidual.correction_in_eigenbasis`)."""
        return self._guided(self.residual.correction_in_eigenbasis, c, t)

    def _guided(self, net, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n = len(x)
        cond = torch.cat([self.codes.expand(n, -1),
                          torch.zeros(n, self.codes.shape[1], dtype=torch.long, device=self.codes.device)])
        out = net(torch.cat([x, x]), torch.cat([t, t]), cond)
        return out[n:] + self.guidance * (out[:n] - out[n:])

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.correction(x, t)
        return out if self.residual is None else out + self.residual.gaussian_prediction(x, t, self.mean)

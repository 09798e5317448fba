"""Generator: a trained run, loaded for sampling new voices.

Each voice has its own 63-bit seed; with the deterministic DDIM sampler (eta = 0) a voice depends only on
its seed and the generator's weights, so it can be re-made alone, in any batch, by id (equal up to float
rounding, ~1e-5). Stochastic samplers draw each voice's noise from its own seed too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch

from .config import TrainConfig
from .diffusion.denoisers import GaussianResidual
from .errors import SpeakEmbError
from .fileio import load_tensors
from .profiles import Profile
from .standardize import Standardizer
from .training import GENERATOR_KIND, FORMAT_VERSION, build_diffusion, build_model


def voice_seeds(seed: int, n: int) -> np.ndarray:
    """n distinct per-voice seeds derived from one bank seed (SeedSequence: no overlap between bank seeds)."""
    if not 0 <= int(seed) < 2**63:
        raise SpeakEmbError(f"seed must be in 0..2^63-1; got {seed}")
    state = np.random.SeedSequence(int(seed)).generate_state(2 * n, dtype=np.uint32).astype(np.uint64)
    seeds = ((state[0::2] << np.uint64(31)) ^ state[1::2]) & np.uint64((1 << 63) - 1)
    return seeds.astype(np.int64)


class Generator:
    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, standardizer: Standardizer, profile: Profile,
                 meta: Dict, fingerprint: str, path: Optional[Path] = None):
        self.model, self.cfg, self.standardizer, self.profile = model.eval(), cfg, standardizer, profile
        self.meta, self.fingerprint, self.path = meta, fingerprint, path
        self.diffusion = build_diffusion(cfg)

    @property
    def dim(self) -> int:
        return self.profile.dim

    @property
    def model_dim(self) -> int:
        """Dimension the diffusion runs in (the data's, + 1 with the polar transform)."""
        return self.standardizer.model_dim

    @classmethod
    def load(cls, path: Union[str, Path]) -> "Generator":
        """Load from a run folder (its ``generator.safetensors``) or the file itself."""
        path = Path(path)
        if path.is_dir():
            if not (path / "generator.safetensors").exists():
                hint = " (training has not finished; resume it with the same train command)" if (
                    path / "checkpoints").exists() else ""
                raise SpeakEmbError(f"{path} holds no generator.safetensors{hint}")
            path = path / "generator.safetensors"
        arrays, meta = load_tensors(path, "generator")
        if meta.get("kind") != GENERATOR_KIND:
            raise SpeakEmbError(f"{path} is a '{meta.get('kind')}' file, not a generator")
        if not isinstance(meta.get("format_version"), int) or meta["format_version"] > FORMAT_VERSION:
            raise SpeakEmbError(f"{path} has generator format {meta.get('format_version')!r}; "
                                f"this version reads up to {FORMAT_VERSION}")
        try:
            cfg = TrainConfig.from_dict(meta["config"], f"{path} config")
            profile = Profile.from_json(meta["profile"])
            st = Standardizer.from_arrays(arrays)
            if st.dim != profile.dim:
                raise SpeakEmbError(f"generator {path}: statistics are {st.dim}-dim, profile is {profile.dim}-dim")
            basis = arrays.get("model.basis")
            model = build_model(cfg, st.model_dim, None if basis is None else basis.shape[1])
            sd = {k[len("model."):]: torch.from_numpy(v.copy()) for k, v in arrays.items() if k.startswith("model.")}
            model.load_state_dict(sd)
        except (KeyError, RuntimeError) as e:
            raise SpeakEmbError(f"generator {path} is damaged or incomplete ({str(e).splitlines()[0][:160]})") from None
        h = hashlib.sha256()
        for k in sorted(arrays):
            h.update(k.encode())
            h.update(np.ascontiguousarray(arrays[k]).tobytes())
        return cls(model, cfg, st, profile, meta, h.hexdigest()[:16], path)

    # ---- sampling ---------------------------------------------------------------------------------
    def initial_noise(self, seeds: Sequence[int]) -> torch.Tensor:
        """x_T for each voice from its own seed."""
        out = torch.empty(len(seeds), self.model_dim)
        g = torch.Generator()
        for i, s in enumerate(seeds):
            g.manual_seed(int(s))
            out[i] = torch.randn(self.model_dim, generator=g)
        return out

    @torch.no_grad()
    def sample_seeds(self, seeds: Sequence[int], sampler: Optional[str] = None, steps: Optional[int] = None,
                     eta: Optional[float] = None, batch_size: Optional[int] = None) -> np.ndarray:
        """Embeddings (n, d) in the data space for the given per-voice seeds."""
        sc = self.cfg.sample
        sampler = sc.sampler if sampler is None else sampler
        steps = sc.steps if steps is None else steps
        eta = sc.eta if eta is None else eta
        batch_size = sc.batch_size if batch_size is None else batch_size
        if batch_size < 1:
            raise SpeakEmbError(f"batch size must be at least 1; got {batch_size}")
        if sampler not in ("ddim", "ancestral"):
            raise SpeakEmbError(f"unknown sampler '{sampler}' (known: ddim, ancestral)")
        if sampler == "ddim" and not 1 <= steps <= self.diffusion.num_timesteps:
            raise SpeakEmbError(f"--steps must be in 1..{self.diffusion.num_timesteps}; got {steps}")
        seeds = [int(s) for s in seeds]
        out = []
        for b in range(0, len(seeds), batch_size):
            chunk = seeds[b:b + batch_size]
            x_T = self.initial_noise(chunk)
            # stochastic steps draw each voice's noise from its own generator, so a voice never depends on
            # the batch it is sampled in
            gens = [torch.Generator().manual_seed(s ^ 0x5EED) for s in chunk]

            def noise_fn() -> torch.Tensor:
                return torch.stack([torch.randn(self.model_dim, generator=g) for g in gens])

            if sampler == "ddim":
                gaussian = self.model if isinstance(self.model, GaussianResidual) else None
                z = self.diffusion.ddim_sample_loop(self.model, x_T, steps=steps, eta=eta, gaussian=gaussian,
                                                    noise_fn=noise_fn)
            else:
                z = self.diffusion.p_sample_loop(self.model, x_T, noise_fn=noise_fn)
            out.append(self.standardizer.inverse(z.numpy()))
        return np.concatenate(out, axis=0) if out else np.zeros((0, self.dim), np.float32)

    def sample(self, n: int, seed: int = 0, **kwargs) -> np.ndarray:
        """n new voices from one seed: ``sample(n, seed)`` always gives the same (n, d) array."""
        if n < 1:
            raise SpeakEmbError(f"number of voices must be at least 1; got {n}")
        return self.sample_seeds(voice_seeds(seed, n), **kwargs)

    def describe(self) -> Dict:
        return {"path": str(self.path) if self.path else None, "fingerprint": self.fingerprint,
                "profile": self.profile.name, "dim": self.dim, "trained_steps": self.meta.get("trained_steps"),
                "schedule": self.cfg.diffusion.schedule, "model": self.cfg.model.kind,
                "level": self.cfg.data.level}

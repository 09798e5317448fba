"""Embedding data of known structure: a speaker population whose true distribution can be sampled at will.

Speakers are a fixed random nonlinear map of a low-dimensional latent drawn from a Gaussian mixture
(clusters, like accents or genders), so the speaker distribution is curved, clustered and far from
Gaussian, yet fresh speakers from the *true* distribution are one call away — which lets tests and
benchmarks compare a generator against what genuinely new speakers score. Utterances scatter around their
speaker (isotropic noise plus a few shared "channel" directions), like real encoder outputs.

Speakers also have known attributes (:meth:`SyntheticPopulation.attributes`): ``accent`` is the mixture
cluster a speaker was drawn from, ``gender`` the side of the mixture's mean on the first latent axis. Both
are functions of the latent, so the true distribution of speakers *given* an attribute can be sampled too
(:meth:`SyntheticPopulation.sample_speakers_with`), which is what conditional generation is judged against.

This is the embedded default data (``builtin:synthetic``): no download, fully reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from toucan_speakemb.core.embedding_set import EmbeddingSet
from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.core.profiles import get_profile


@dataclass
class SyntheticPopulation:
    dim: int = 704
    latent_dim: int = 16
    clusters: int = 6
    hidden: int = 256
    cluster_spread: float = 2.0   # distance scale between cluster centres in latent units
    within_cluster: float = 2.0   # latent std inside a cluster (clusters overlap, as accents do)
    utterance_scatter: float = 0.45  # per-dimension std of utterance noise, relative to speaker std
    channel_rank: int = 4
    offset_scale: float = 0.3     # common offset of all speakers (real encoders' outputs are not centred)
    seed: int = 1234

    def __post_init__(self):
        rng = np.random.default_rng(self.seed)
        q, h, d = self.latent_dim, self.hidden, self.dim
        self.centres = rng.normal(0, self.cluster_spread, (self.clusters, q))
        self.weights = rng.dirichlet(np.full(self.clusters, 4.0))
        self.w1 = rng.normal(0, 1.6 / np.sqrt(q), (q, h))
        self.b1 = rng.normal(0, 0.5, h)
        self.w2 = rng.normal(0, 1.0 / np.sqrt(h), (h, d))
        self.w2 *= np.exp(rng.normal(0, 0.5, d))[None, :]  # dimensions of unequal scale, as in real encoders
        self.offset = rng.normal(0, 1.0, d) * self.offset_scale
        self.channel = rng.normal(0, 1.0 / np.sqrt(d), (self.channel_rank, d))
        calib = self._raw(self.sample_latent(4000, np.random.default_rng(0)))
        # centred and scaled so speakers vary with unit variance per dimension around a small common offset
        self._centre = calib.mean(0)
        self._scale = float(np.sqrt(calib.var(0).mean()))

    def sample_latent(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.sample_latent_and_cluster(n, rng)[0]

    def sample_latent_and_cluster(self, n: int, rng: np.random.Generator):
        k = rng.choice(self.clusters, size=n, p=self.weights)
        return self.centres[k] + rng.normal(0, self.within_cluster, (n, self.latent_dim)), k

    def attributes(self, z: np.ndarray, cluster: np.ndarray) -> dict:
        """Known attributes of speakers from their latent and cluster: gender 'f' / 'm' (first latent axis
        above / below the mixture mean) and accent 'c<cluster>'."""
        axis_mean = float(self.weights @ self.centres[:, 0])
        return {"gender": ["f" if v > axis_mean else "m" for v in z[:, 0]],
                "accent": [f"c{int(c)}" for c in cluster]}

    def sample_speakers_with(self, n: int, rng: np.random.Generator, attribute: str, value: str) -> np.ndarray:
        """n fresh speakers from the true distribution given one attribute value (by rejection)."""
        out, have = [], 0
        for _ in range(1000):
            z, k = self.sample_latent_and_cluster(max(4 * n, 256), rng)
            keep = np.array(self.attributes(z, k)[attribute]) == value
            out.append(z[keep])
            have += int(keep.sum())
            if have >= n:
                return self.speakers_from_latent(np.concatenate(out)[:n])
        raise SpeakEmbError(f"synthetic population: {attribute}={value!r} is (almost) never drawn")

    def _raw(self, z: np.ndarray) -> np.ndarray:
        return np.tanh(z @ self.w1 + self.b1) @ self.w2

    def speakers_from_latent(self, z: np.ndarray) -> np.ndarray:
        return ((self._raw(z) - self._centre) / self._scale + self.offset).astype(np.float32)

    def sample_speakers(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n fresh speakers (their true, noise-free embeddings) from the true distribution."""
        return self.speakers_from_latent(self.sample_latent(n, rng))

    def sample_utterances(self, speakers: np.ndarray, per_speaker: int, rng: np.random.Generator) -> np.ndarray:
        """(n_speakers * per_speaker, d) utterance embeddings, speaker-major order."""
        rep = np.repeat(speakers, per_speaker, axis=0)
        noise = rng.normal(0, self.utterance_scatter, rep.shape)
        chan = rng.normal(0, self.utterance_scatter * 2.0, (len(rep), self.channel_rank)) @ self.channel * np.sqrt(self.dim)
        return (rep + noise + chan * 0.25).astype(np.float32)

    def make_set(self, n_speakers: int, per_speaker: int, seed: int, prefix: str = "spk",
                 attributes: bool = False) -> EmbeddingSet:
        """An EmbeddingSet of utterances of fresh speakers; its ``provenance`` names the population.
        ``attributes``: fill gender and accent with the speakers' known attributes (same embeddings)."""
        if n_speakers < 1 or per_speaker < 1:
            raise SpeakEmbError("a synthetic set needs at least one speaker and one utterance per speaker")
        rng = np.random.default_rng(seed)
        z, cluster = self.sample_latent_and_cluster(n_speakers, rng)
        spk = self.speakers_from_latent(z)
        x = self.sample_utterances(spk, per_speaker, rng)
        ids = [f"{prefix}{i:05d}" for i in range(n_speakers) for _ in range(per_speaker)]
        utts = [f"{prefix}{i:05d}-{j:03d}" for i in range(n_speakers) for j in range(per_speaker)]
        prov = {"synthetic": {"population_seed": self.seed, "set_seed": seed, "dim": self.dim,
                              "latent_dim": self.latent_dim, "clusters": self.clusters}}
        es = EmbeddingSet(x, ids, get_profile(f"synthetic-{self.dim}"), utts, provenance=prov)
        if attributes:
            attrs = self.attributes(z, cluster)
            es.gender = [g for g in attrs["gender"] for _ in range(per_speaker)]
            es.accent = [a for a in attrs["accent"] for _ in range(per_speaker)]
        return es


BUILTIN = {
    # name: (population kwargs, speakers, utterances per speaker, set seed)
    "builtin:synthetic": (dict(dim=704), 600, 8, 1),
    "builtin:synthetic-small": (dict(dim=64, hidden=64), 300, 6, 1),
}


def builtin_set(name: str) -> EmbeddingSet:
    if name not in BUILTIN:
        raise SpeakEmbError(f"unknown built-in data '{name}' (known: {', '.join(BUILTIN)})")
    kw, n, per, seed = BUILTIN[name]
    return SyntheticPopulation(**kw).make_set(n, per, seed)


def builtin_population(name: str) -> Optional[SyntheticPopulation]:
    return SyntheticPopulation(**BUILTIN[name][0]) if name in BUILTIN else None

"""Hear generated voices without a corpus: `toucan-speakemb demo --toucan-dir DIR`.

A generator needs embeddings of many speakers in the Toucan model's own space, which a newcomer does not have
yet. This trains a small one on **stand-in speakers that are not a real speaker distribution**: the built-in
population of known structure (:mod:`toucan_speakemb.core.synthetic`, clustered and nonlinear) at the model's
width, placed around the one embedding every Toucan checkpoint carries, its ``default_emb`` (the voice it
speaks with when given none), each dimension spread by ``spread`` times the default embedding's typical size.
The voices it samples are new points in the model's conditioning space, so Toucan speaks them, and they show
the whole path (generator → novelty check → Toucan → wav + sidecar); they say nothing about how real
speakers are distributed. For real voices, extract embeddings of a corpus (`toucan-speakemb extract`) and
train on them (`toucan-speakemb train`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from toucan_speakemb.core.embedding_set import EmbeddingSet
from toucan_speakemb.core.synthetic import SyntheticPopulation
from toucan_speakemb.core.threads import cpu_threads
from toucan_speakemb.generate.generator import Generator
from toucan_speakemb.training.config import TrainConfig
from toucan_speakemb.training.trainer import train

from toucan_speakemb.adapters import synthesis
from toucan_speakemb.adapters.toucan import ToucanModels, checkpoint_default_embedding

log = logging.getLogger("toucan_speakemb.first_voices")

NOT_REAL = ("stand-in speakers around the Toucan model's default_emb (the built-in population of known "
            "structure), not a real speaker distribution")
SENTENCES = ("Hello, this is a voice that belongs to no real speaker.",
             "The quick brown fox jumps over the lazy dog.")


def toucan_space_set(models: ToucanModels, n_speakers: int = 100, per_speaker: int = 4, seed: int = 0,
                     spread: float = 2.0) -> EmbeddingSet:
    """Stand-in speakers in the model's space (see the module doc), labelled with the model's profile and,
    in the provenance, as not real. Few speakers, widely spread: with 300 speakers at half the default
    embedding's size, every candidate of a fresh generator fell within the same-speaker threshold of one."""
    default = checkpoint_default_embedding(models.tts)
    population = SyntheticPopulation(dim=models.profile.dim)
    es = population.make_set(n_speakers, per_speaker, seed=seed, prefix="standin")
    scale = spread * float(np.linalg.norm(default)) / np.sqrt(default.size)  # per dimension, unit-variance data
    x = (default[None, :] + scale * es.embeddings).astype(np.float32)
    prov = dict(es.provenance, not_real_speakers=NOT_REAL, placed_around=f"default_emb of {models.tts}",
                spread=spread)
    return EmbeddingSet(x, es.speaker_ids, models.profile, es.utterance_ids, provenance=prov)


def hear_voices(models: ToucanModels, out: Path, texts: Sequence[str] = SENTENCES, voices: int = 3,
                steps: int = 300, seed: int = 0, device: str = "auto", language: Optional[str] = None,
                progress: bool = True) -> List[Dict]:
    """Train the stand-in generator in ``out/run`` and speak each of ``texts`` in ``voices`` new voices into
    ``out/wavs`` (each wav with its sidecar); training, sampling and Toucan on ``device``. Returns the sidecars."""
    out = Path(out)
    cfg = TrainConfig()
    cfg.train.steps, cfg.seed, cfg.train.device = steps, seed, device
    with cpu_threads(cfg.train.threads):  # the whole job on the training's threads, as the demo
        train(toucan_space_set(models, seed=seed), out / "run", cfg, progress=progress)
        gen = Generator.load(out / "run", device)
        lines = [t for t in texts for _ in range(voices)]  # every utterance in a new voice
        targets = [out / "wavs" / f"{i + 1:02d}_voice{v + 1}.wav" for i in range(len(texts)) for v in range(voices)]
        cars, _ = synthesis.synth(lines, targets, gen, models, seed=seed, device=device, language=language,
                                  progress=progress)
    log.info("%d wavs in %s (%s)", len(cars), out / "wavs", NOT_REAL)
    return cars

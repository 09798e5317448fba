"""The one synthesis path: voice → Toucan → wav + sidecar JSON, used by `synth`, the batch recipe
(:mod:`.batch_voices`) and the hook (:mod:`.hook`).

Same seed, same audio: Toucan v3.x samples its prosody and keeps dropout on at inference, so before each
utterance (each hooked call) torch, numpy's global generator and Python's ``random`` are seeded from the
voice id and the text (:func:`utterance_seed`), and their previous states come back afterwards. The seed is
written to the sidecar (``synthesis_seed``); the same voice saying the same text gives the same audio, on
the same software and thread count.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from toucan_speakemb.core.distributed import resolve_device
from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.core.fileio import atomic_write_json, utc_timestamp
from toucan_speakemb.core.version import __version__
from toucan_speakemb.generate.request import SamplingRequest
from toucan_speakemb.voices.bank import VoiceBank
from toucan_speakemb.voices.novelty import Voice, VoiceSampler

from toucan_speakemb.adapters.toucan import ToucanAdapter, ToucanModels, write_wav

log = logging.getLogger("toucan_speakemb.synthesis")

SEEDING = ("torch, numpy and random seeded before the utterance with synthesis_seed = the first 4 bytes "
           "(little-endian) of sha256('<voice id>\\n<text>')")


def utterance_seed(voice_id: str, text: str) -> int:
    """The seed of Toucan's randomness for one utterance: from the voice and the text (a 32-bit number,
    the range numpy's global generator takes)."""
    return int.from_bytes(hashlib.sha256(f"{voice_id}\n{text}".encode("utf-8")).digest()[:4], "little")


@contextlib.contextmanager
def seeded(seed: int):
    """torch, numpy's global generator and ``random`` seeded with ``seed`` inside; their states restored after."""
    import torch

    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    try:
        yield seed
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])


class Synthesis:
    """A Toucan adapter and a generator: conditions utterances on voices and describes what was made.

    ``draw_seed`` / ``sampling``: how the voices were drawn (None for voices re-made by id);
    ``distinctness_against``: what the voices' distinctness was judged against (for the record).
    """

    def __init__(self, adapter: ToucanAdapter, generator, draw_seed: Optional[int] = None,
                 sampling: Optional[Dict[str, Any]] = None, distinctness_against: str = ""):
        adapter.check_generator(generator)
        self.adapter, self.generator = adapter, generator
        self.draw_seed, self.sampling, self.distinctness_against = draw_seed, sampling or {}, distinctness_against

    @contextlib.contextmanager
    def conditioned(self, voice: Voice, text: str):
        """Inside: the interface speaks in ``voice`` with its randomness seeded from the voice and ``text``;
        yields the seed."""
        self.adapter.before_utterance()
        with seeded(utterance_seed(voice.id, text)) as seed, self.adapter.voice(voice.embedding):
            yield seed

    def record(self, voice: Voice, synthesis_seed: int, **fields) -> Dict[str, Any]:
        """The sidecar of one utterance (or one hooked call): ``fields`` first, then voice, seeds, generator,
        novelty figures, Toucan and versions."""
        g = self.generator
        return {**fields, "voice_id": voice.id, "seed": voice.seed, "draw_seed": self.draw_seed,
                "synthesis_seed": synthesis_seed, "seeding": SEEDING,
                "generator": {"path": str(g.path), "fingerprint": g.fingerprint}, "profile": g.profile.name,
                "dim": g.dim, **voice.figures(), **({"sampling": self.sampling} if self.sampling else {}),
                "distinctness_against": self.distinctness_against, "toucan": self.adapter.info(),
                "toucan_speakemb_version": __version__, "created": utc_timestamp()}

    def speak(self, voice: Voice, text: str, wav: Path, **fields) -> Dict[str, Any]:
        """Synthesise ``text`` in ``voice``; write ``wav`` and its sidecar (``wav`` with .json) atomically."""
        with self.conditioned(voice, text) as seed:
            wave, sr = self.adapter.synthesize(text)
        if len(wave) == 0 or not np.isfinite(wave).all():
            raise SpeakEmbError(f"Toucan returned empty or non-finite audio for {text!r}")
        write_wav(wav, wave, sr)
        car = self.record(voice, seed, wav=Path(wav).name, text=text, sample_rate=sr,
                          duration_s=round(len(wave) / sr, 3), **fields)
        atomic_write_json(Path(wav).with_suffix(".json"), car)
        return car


def synth(texts: Sequence[str], outputs: Sequence[Path], generator, models: ToucanModels,
          voice_id: Optional[str] = None, seed: Optional[int] = None, same_voice: bool = False,
          bank: Optional[Path] = None, threshold: Optional[float] = None,
          request: Optional[SamplingRequest] = None, device: str = "auto", language: Optional[str] = None,
          progress: bool = True) -> Tuple[List[Dict[str, Any]], int]:
    """What `synth` does: the texts in fresh voices (or one re-made voice), each to its wav and sidecar.

    Everything that can be checked is checked before Toucan (slow to load) is built. Toucan runs on ``device``
    (auto: the GPU of this process's LOCAL_RANK when CUDA is there, else cpu); the generator where it was
    loaded. Returns the sidecars and how many voices were added to ``bank`` (made if missing, updated only with
    fresh voices).
    """
    device = resolve_device(device)
    models.check_generator(generator)
    the_bank = None
    if bank is not None and Path(bank).exists():
        the_bank = VoiceBank.load(bank)
        the_bank.check_generator(generator, bank)
    sampler = VoiceSampler(generator, seed, threshold, the_bank, request=request)
    if voice_id:
        voices = [sampler.remake(voice_id)] * len(texts)
    elif same_voice:
        voices = [sampler.next()] * len(texts)
    else:
        voices = sampler.take(len(texts))
    # distinctness against every voice of this run (and the bank), not only those drawn before it
    voices = [sampler.check.judge(v.id, v.seed, v.embedding) for v in voices]
    synthesis = Synthesis(models.load(device=device, language=language), generator,
                          draw_seed=None if voice_id else sampler.seed, sampling=sampler.settings,
                          distinctness_against="voices of this run" + (f" and bank {bank}" if bank else ""))
    bar = None
    if len(texts) > 1 and progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(texts), desc="synth", unit="utt", dynamic_ncols=True)
    cars = []
    for text, v, wav in zip(texts, voices, outputs):
        cars.append(synthesis.speak(v, text, wav))
        log.info("%s: voice %s (synthesis seed %d)", wav, v.id, cars[-1]["synthesis_seed"])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    added = 0
    if bank is not None and not voice_id:
        the_bank = the_bank if the_bank is not None else VoiceBank.empty(generator.profile,
                                                                         {"generator": generator.describe()})
        fresh = list({v.id: v for v in voices if v.id not in the_bank.ids}.values())
        the_bank.added(fresh, dict(sampler.provenance(), created=utc_timestamp(), via="synth")).save(bank)
        added = len(fresh)
    return cars, added

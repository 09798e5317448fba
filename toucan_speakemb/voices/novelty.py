"""New and distinct voices: every voice handed to Toucan is checked, not hoped, to be neither a training
speaker nor another voice of its bank.

A candidate voice (a generated embedding) is accepted when its cosine similarity to every training speaker
(the speaker means the generator was trained on) and to every voice already accepted is at most a threshold.
Which threshold is a rule, chosen by ``threshold`` (``--threshold`` on the command line):

- ``"unseen"``: as far as real new speakers are. At training time the generator measures each training
  speaker's cosine to its nearest other training speaker, each left out in turn as a real new speaker would
  come to the population (:func:`toucan_speakemb.training.trainer.unseen_speaker_record`); the threshold is
  the 0.9 quantile of these (``"unseen:Q"`` asks for another quantile Q). A voice is then at least as far from every
  training speaker as 9 in 10 real new speakers are, and at least as far from the other voices as real
  speakers are from their nearest neighbour in the population. On dense populations (thousands of speakers)
  real new speakers lie above the encoder's same-speaker threshold of *some* training speaker, so the rule
  below would reject nearly every voice a good generator makes, and every real new person too.
- the default (None): the looser of the two below and above, so that no voice is rejected that either
  real new speakers or the encoder's own same-speaker judgement would let through: on dense populations
  the unseen-speaker threshold, on sparse ones (real new speakers far below the same-speaker threshold)
  the same-speaker one, as before the calibration existed.
- ``"same-speaker"``: stricter, for anonymisation: no closer than the *same-speaker threshold*, the equal-error
  point of same- and different-speaker cosine over the training utterances
  (:func:`toucan_speakemb.evaluation.metrics.same_speaker_threshold`), above which the encoder itself would
  judge two embeddings to be one speaker.
- a number: that cosine.

Generators trained before the unseen-speaker record existed fall back to the same-speaker threshold, and
the log says so.

Candidates come in the order of their per-voice seeds (:func:`toucan_speakemb.generate.generator.voice_seeds` of
one draw seed), so which voices are accepted depends only on the generator, the draw seed, the threshold
and the voices already in the bank: never on how many candidates are sampled at once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.generate.request import SamplingRequest, variant_tag
from toucan_speakemb.voices.bank import voice_id

log = logging.getLogger("toucan_speakemb.voices")

# How many rejected candidates in a row make the search give up with an explanation.
DEFAULT_MAX_DRAWS = 1000
# The most candidates sampled in one call of the generator (when most candidates are rejected).
MAX_BLOCK = 128

UNSEEN_RULE = "unseen"
SAME_SPEAKER_RULE = "same-speaker"
RULE_HELP = ("Which voices count as new: 'unseen' (no closer to a training speaker, or to another voice, than 9 "
             "in 10 real new speakers are to their nearest training speaker; calibrated on the generator's "
             "training speakers, each left out in turn), 'unseen:Q' (quantile Q instead of 0.9), 'same-speaker' (below the encoder's "
             "same-speaker threshold: stricter on dense populations, for anonymisation), or a cosine similarity. "
             "Default: the looser of 'unseen' and 'same-speaker'")


def resolve_rule(generator, threshold: Union[None, float, str]) -> Tuple[float, str]:
    """The threshold a voice must stay under, and the rule it comes from (see the module's docstring).

    ``threshold``: None (the looser of the unseen-speaker and the same-speaker rules), "unseen", "unseen:Q",
    "same-speaker", or a cosine (a number or its text). Bad values and generators that cannot give the rule raise SpeakEmbError.
    """
    spec = UNSEEN_RULE if threshold is None else threshold
    if isinstance(spec, str):
        spec = spec.strip().lower()
        try:
            spec = float(spec)
        except ValueError:
            pass
    if not isinstance(spec, str):
        t = float(spec)
        if not -1.0 <= t <= 1.0:
            raise SpeakEmbError(f"threshold is a cosine similarity in -1..1; got {threshold}")
        return t, "given"
    if spec == SAME_SPEAKER_RULE:
        return _same_speaker(generator), SAME_SPEAKER_RULE
    rule, _, q = spec.partition(":")
    if rule != UNSEEN_RULE:
        raise SpeakEmbError(f"bad threshold '{threshold}': give 'unseen', 'unseen:Q' (a quantile in 0..1), "
                            f"'same-speaker' or a cosine similarity")
    record = generator.meta.get("unseen_speaker_threshold") or {}
    if record.get("value") is None:
        why = record.get("reason", "it was made by an older version that did not store one")
        if threshold is not None:  # asked for by name: say it cannot be had
            raise SpeakEmbError(f"generator {generator.path} has no unseen-speaker threshold ({why}); give "
                                f"'same-speaker' or a cosine similarity, or retrain")
        value = _same_speaker(generator)
        log.warning("generator %s has no unseen-speaker threshold (%s): falling back to the same-speaker "
                    "threshold %.3f, which on dense populations rejects most voices (retrain to calibrate)",
                    generator.path, why, value)
        return value, SAME_SPEAKER_RULE
    if not q:
        value, name = float(record["value"]), f"{UNSEEN_RULE}:{record.get('quantile', 0.9):g}"
        same = generator.same_speaker_threshold
        if threshold is None and same is not None and same > value:
            # a sparse population: real new speakers lie far below the encoder's same-speaker threshold; a
            # voice below it is a different person all the same (the default never asks more than that)
            return same, SAME_SPEAKER_RULE
        return value, name
    try:
        qf = float(q)
    except ValueError:
        qf = -1.0
    if not 0.0 <= qf <= 1.0:
        raise SpeakEmbError(f"bad threshold '{threshold}': the quantile after 'unseen:' is a number in 0..1")
    return float(np.quantile(np.asarray(record["nearest_cosines"], np.float64), qf)), f"{UNSEEN_RULE}:{qf:g}"


def _same_speaker(generator) -> float:
    stored = generator.same_speaker_threshold
    if stored is None:
        why = (generator.meta.get("same_speaker_threshold") or {}).get(
            "reason", "it was made by an older version that did not store one")
        raise SpeakEmbError(f"generator {generator.path} has no same-speaker threshold ({why}); give one "
                            f"with --threshold (a cosine similarity, e.g. 0.5)")
    return stored


def random_draw_seed() -> int:
    """A fresh 63-bit draw seed from the operating system (recorded, so the draw can be repeated)."""
    return int.from_bytes(os.urandom(8), "little") >> 1


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x.reshape(1, -1) if x.ndim == 1 else x
    n = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(n == 0):
        raise SpeakEmbError("an all-zero embedding has no direction, so its cosine similarity is undefined")
    return x / n


@dataclass
class Voice:
    """One voice and the figures that show it is new and distinct."""

    id: str
    seed: int
    embedding: np.ndarray
    nearest_training_cosine: float       # cosine to the nearest training speaker
    nearest_training_speaker: str
    nearest_voice_cosine: Optional[float]  # to the nearest other voice of the bank/session (None if alone)
    nearest_voice_id: Optional[str]
    threshold: float
    rule: str = SAME_SPEAKER_RULE  # where the threshold comes from (see resolve_rule)

    @property
    def is_new(self) -> bool:
        return self.nearest_training_cosine <= self.threshold

    @property
    def is_distinct(self) -> bool:
        return self.nearest_voice_cosine is None or self.nearest_voice_cosine <= self.threshold

    def figures(self) -> Dict:
        return {"nearest_training_cosine": round(self.nearest_training_cosine, 6),
                "nearest_training_speaker": self.nearest_training_speaker,
                "nearest_voice_cosine": None if self.nearest_voice_cosine is None else round(self.nearest_voice_cosine, 6),
                "nearest_voice_id": self.nearest_voice_id,
                "threshold": round(self.threshold, 6), "threshold_rule": self.rule,
                "new": self.is_new, "distinct": self.is_distinct}


class NoveltyCheck:
    """Cosine of candidates to the training speakers and to the voices accepted so far."""

    def __init__(self, train_means: np.ndarray, train_ids: Sequence[str], threshold: float,
                 rule: str = SAME_SPEAKER_RULE):
        self.train = _unit_rows(train_means)
        self.train_ids = list(train_ids)
        self.threshold, self.rule = float(threshold), rule
        self._voices = np.zeros((0, self.train.shape[1]))
        self.voice_ids: List[str] = []

    def nearest_training(self, x: np.ndarray):
        sims = _unit_rows(x) @ self.train.T
        idx = sims.argmax(axis=1)
        return sims[np.arange(len(idx)), idx], idx

    def nearest_voice(self, x: np.ndarray, exclude: Optional[str] = None):
        """Largest cosine to an accepted voice (other than ``exclude``) and its id, or (None, None)."""
        keep = [i for i, v in enumerate(self.voice_ids) if v != exclude]
        if not keep:
            return None, None
        sims = _unit_rows(x)[0] @ self._voices[keep].T
        j = int(sims.argmax())
        return float(sims[j]), self.voice_ids[keep[j]]

    def add(self, ids: Sequence[str], x: np.ndarray) -> None:
        self._voices = np.concatenate([self._voices, _unit_rows(x)]) if len(ids) else self._voices
        self.voice_ids += list(ids)

    def judge(self, vid: str, seed: int, emb: np.ndarray, train_cos: Optional[float] = None,
              train_idx: Optional[int] = None) -> Voice:
        if train_cos is None:
            c, i = self.nearest_training(emb)
            train_cos, train_idx = float(c[0]), int(i[0])
        vc, vid_near = self.nearest_voice(emb, exclude=vid)
        return Voice(vid, int(seed), np.asarray(emb, np.float32), float(train_cos), self.train_ids[int(train_idx)],
                     vc, vid_near, self.threshold, self.rule)


class VoiceSampler:
    """A stream of new, distinct voices from a generator (the fast sampler, in blocks of at least ``block``
    candidates, more when many are rejected).

    ``next()`` returns the next candidate, in seed order, that is no closer than the threshold to any
    training speaker or to any voice handed out before (or already in ``bank``). ``distinct=False`` checks
    novelty only (voices may then repeat each other's neighbourhood, never a training speaker's).
    """

    def __init__(self, generator, seed: Optional[int] = None, threshold: Optional[float] = None, bank=None,
                 distinct: bool = True, block: int = 16, max_draws: int = DEFAULT_MAX_DRAWS,
                 request: Optional[SamplingRequest] = None, **settings):
        if request is not None and settings:
            raise TypeError("give a SamplingRequest or its fields as keywords, not both")
        self.generator = generator
        # how the voices are sampled (conditions, sliders, temperature): refused here, before any work, when
        # the generator lacks the attribute or the slider; novelty is judged on the edited voice, the one
        # that speaks
        self.request = request or SamplingRequest.of(**settings)
        self.settings = self.request.settings(generator)
        self._variant = variant_tag(self.settings)
        self.threshold, self.rule = resolve_rule(generator, threshold)
        means, ids = generator.training_speakers()
        self.check = NoveltyCheck(means, ids, self.threshold, self.rule)
        if bank is not None:
            generator.profile.check_same(bank.profile, f"generator {generator.path}", "the voice bank")
            self.check.add(bank.ids, bank.embeddings)
        self.seed = random_draw_seed() if seed is None else int(seed)
        self.distinct, self.block, self.max_draws = distinct, max(1, int(block)), int(max_draws)
        self._seeds = np.zeros(0, np.int64)
        self._buffer: List[tuple] = []
        self.drawn = 0
        self.rejected = {"training speaker": 0, "other voice": 0}

    def _candidate_seeds(self, start: int, n: int) -> np.ndarray:
        from toucan_speakemb.generate.generator import voice_seeds

        if len(self._seeds) < start + n:  # the seed stream is prefix-stable: extend by doubling
            self._seeds = voice_seeds(self.seed, max(start + n, 2 * len(self._seeds)))
        return self._seeds[start:start + n]

    def _refill(self) -> None:
        # a call for many candidates costs little more than a call for one: when most are rejected, draw
        # enough to expect about `block` accepted ones (the voices accepted do not depend on this)
        accepted = self.drawn - sum(self.rejected.values())
        size = int(min(MAX_BLOCK, max(self.block, round(self.block * (self.drawn + 1) / (accepted + 1)))))
        seeds = self._candidate_seeds(self.drawn + len(self._buffer), size)
        x = self.generator.sample_seeds(seeds, self.request)
        cos, idx = self.check.nearest_training(x)
        self._buffer += list(zip(seeds.tolist(), x, cos.tolist(), idx.tolist()))

    def next(self) -> Voice:
        for _ in range(self.max_draws):
            if not self._buffer:
                self._refill()
            seed, emb, tcos, tidx = self._buffer.pop(0)
            self.drawn += 1
            vid = voice_id(self.generator.fingerprint, seed, self._variant)
            if vid in self.check.voice_ids:  # already in the bank
                continue
            if tcos > self.threshold:
                self.rejected["training speaker"] += 1
                continue
            v = self.check.judge(vid, seed, emb, tcos, tidx)
            if self.distinct and not v.is_distinct:
                self.rejected["other voice"] += 1
                continue
            if self.distinct:
                self.check.add([vid], emb[None])
            return v
        raise SpeakEmbError(
            f"{self.max_draws} candidates in a row were within the threshold {self.threshold:.3f} ({self.rule}) of a "
            f"training speaker or another voice ({self.rejected['training speaker']} and "
            f"{self.rejected['other voice']} rejected so far): this generator's voices are not that far apart; "
            f"give a higher --threshold to accept closer voices")

    def __iter__(self) -> Iterator[Voice]:
        while True:
            yield self.next()

    def take(self, n: int) -> List[Voice]:
        return [self.next() for _ in range(int(n))]

    def remake(self, vid: str) -> Voice:
        """The voice of an id, re-made from its seed, with its figures (not filtered: it is what it is)."""
        seed = parse_voice_id(vid, self.generator, self._variant)
        emb = self.generator.sample_seeds([seed], self.request)[0]
        return self.check.judge(vid, seed, emb)

    def provenance(self) -> Dict:
        return {"draw_seed": self.seed, "threshold": self.threshold, "threshold_rule": self.rule,
                "candidates_drawn": self.drawn, "device": str(self.generator.device),
                "rejected": dict(self.rejected), "distinct": self.distinct, **self.settings}


def parse_voice_id(vid: str, generator, variant: str = "") -> int:
    """The per-voice seed of an id ``<fingerprint[:8]>-<seed>[-<variant>]``; refuses an id of another generator
    or of other conditions than ``variant`` stands for."""
    fp, sep, seed = str(vid).partition("-")
    seed, _, id_variant = seed.partition("-")
    if id_variant != variant:
        raise SpeakEmbError(f"voice {vid} was sampled with other conditions or sliders (variant "
                            f"'{id_variant or 'none'}') than asked for now (variant '{variant or 'none'}'); give the "
                            f"same --gender/--age/--accent/--guidance/--slider as when it was made")
    if not sep or not seed.isdigit() or len(fp) != 8:
        raise SpeakEmbError(f"bad voice id '{vid}' (expected <generator fingerprint, 8 hex digits>-<seed>)")
    if fp != generator.fingerprint[:8]:
        raise SpeakEmbError(f"voice {vid} was made by generator {fp}, not by {generator.path} "
                            f"({generator.fingerprint[:8]})")
    s = int(seed)
    if s >= 2**63:
        raise SpeakEmbError(f"bad voice id '{vid}': its seed is not a 63-bit number")
    return s

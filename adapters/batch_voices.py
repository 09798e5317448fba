"""Batch synthesis: N new voices, each saying a few sentences, as a corpus folder (recipes/batch_voices).

Output folder::

    batch.json                 the settings the batch is made with (a re-run must use the same ones)
    voices.safetensors         the voice bank: ids, seeds, embeddings, novelty figures, provenance
    wavs/<voice id>/<voice id>_NNN.wav   one folder per new voice (speaker id = voice id)
    wavs/<voice id>/<voice id>_NNN.json  its sidecar (text, voice, seed, duration, figures)
    metadata.csv               file, voice_id, seed, text, duration_s, nearest_training_cosine,
                               nearest_voice_cosine, threshold, threshold_rule
    skipped.csv                utterances Toucan could not synthesise, with the reason (only if any)

Resumable: every file is written atomically and an utterance counts as done when its sidecar exists, so a
killed run, started again with the same settings, keeps what is finished and does only the rest. The
voices are fixed by the generator, the seed and the threshold (and stored in the bank before synthesis
starts); which sentence each utterance says is fixed by the seed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.core.fileio import atomic_write_json, atomic_write_text, check_output_folder, read_json
from toucan_speakemb.core.version import __version__
from toucan_speakemb.generate.generator import Generator
from toucan_speakemb.voices.bank import VoiceBank
from toucan_speakemb.voices.novelty import NoveltyCheck, VoiceSampler, resolve_rule

from toucan_speakemb.adapters.synthesis import Synthesis
from toucan_speakemb.adapters.toucan import ToucanModels

log = logging.getLogger("toucan_speakemb.batch")


@dataclass
class BatchConfig:
    generator: str = ""               # run folder of `train` (or its generator.safetensors)
    sentences: str = ""               # UTF-8 text file, one sentence per line
    out: str = "batch_out"
    voices: int = 10                  # new voices (speaker ids)
    utterances_per_voice: int = 5
    seed: int = 0                     # draw seed of the voices and the sentence order
    # which voices count as new: None / "unseen" (as far as real new speakers are), "unseen:Q", "same-speaker"
    # (stricter) or a cosine; see toucan_speakemb/voices/novelty.py
    threshold: Optional[Union[float, str]] = None
    toucan_dir: Optional[str] = None  # IMS-Toucan checkout (v2.2 or v3.x)
    tts_model: Optional[str] = None
    vocoder: Optional[str] = None
    language: Optional[str] = None
    device: str = "cpu"

    @classmethod
    def from_yaml(cls, path, overrides: Sequence[str] = ()) -> "BatchConfig":
        from toucan_speakemb.training.config import apply_overrides, read_yaml_mapping

        return cls.from_dict(apply_overrides(read_yaml_mapping(path, "batch config"), overrides), str(path))

    @classmethod
    def from_dict(cls, d: Dict, what: str = "batch config") -> "BatchConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SpeakEmbError(f"{what}: unknown key '{unknown[0]}' (known: {', '.join(sorted(known))})")
        cfg = cls(**d)
        for key in ("voices", "utterances_per_voice"):
            v = getattr(cfg, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SpeakEmbError(f"{what}: {key} must be a whole number >= 1; got {v!r}")
        if not isinstance(cfg.seed, int) or not 0 <= cfg.seed < 2**63:
            raise SpeakEmbError(f"{what}: seed must be a whole number in 0..2^63-1; got {cfg.seed!r}")
        for key in ("generator", "sentences", "out"):
            if not getattr(cfg, key):
                raise SpeakEmbError(f"{what}: '{key}' is required")
        return cfg


def read_sentences(path) -> List[str]:
    p = Path(path)
    if not p.is_file():
        raise SpeakEmbError(f"sentences file not found: {p}")
    try:
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError:
        raise SpeakEmbError(f"sentences file {p} is not UTF-8 text") from None
    lines = [ln for ln in lines if ln]
    if not lines:
        raise SpeakEmbError(f"sentences file {p} holds no sentences")
    return lines


def sentence_plan(n_sentences: int, voices: int, per_voice: int, seed: int) -> np.ndarray:
    """(voices, per_voice) sentence indices: a seeded shuffle, cycled, so sentences are spread evenly."""
    order = np.random.default_rng(seed).permutation(n_sentences)
    return order[np.arange(voices * per_voice) % n_sentences].reshape(voices, per_voice)


METADATA_COLUMNS = ["file", "voice_id", "seed", "text", "duration_s", "nearest_training_cosine",
                    "nearest_voice_cosine", "threshold", "threshold_rule"]


def _settings(cfg: BatchConfig, gen, sentences: List[str], threshold: float) -> Dict:
    """What fixes the batch's content: a re-run must match it."""
    return {"generator_fingerprint": gen.fingerprint, "profile": gen.profile.name, "seed": cfg.seed,
            "threshold": threshold, "voices": cfg.voices, "utterances_per_voice": cfg.utterances_per_voice,
            "sentences_sha256": hashlib.sha256("\n".join(sentences).encode()).hexdigest()}


def _write_metadata(out: Path, rows: List[Dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, METADATA_COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "metadata.csv", buf.getvalue())


def run_batch(cfg: BatchConfig, adapter=None, progress: bool = True, stop_after: Optional[int] = None) -> Path:
    """Make (or finish) the batch; returns the path of metadata.csv.

    ``adapter``: a ready ToucanAdapter (tests pass one around a stand-in); by default the interface is built
    from ``toucan_dir`` / ``tts_model`` / ``vocoder``, and only if there is something left to synthesise.
    ``stop_after`` stops after that many new utterances (a stand-in for a kill in tests).
    """
    check_output_folder(cfg.out, option="out", resume_marker="batch.json")  # before any work
    gen = Generator.load(cfg.generator)
    sentences = read_sentences(cfg.sentences)
    models = None
    if adapter is None:
        models = ToucanModels(cfg.toucan_dir, cfg.tts_model, cfg.vocoder)
        models.check_generator(gen)
    else:
        adapter.check_generator(gen)
    threshold, rule = resolve_rule(gen, cfg.threshold)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise SpeakEmbError(f"out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(cfg, gen, sentences, threshold)
    state_path = out / "batch.json"
    if state_path.exists():
        before = read_json(state_path, "batch state").get("settings", {})
        diff = [k for k in settings if before.get(k) != settings[k]]
        if diff:
            raise SpeakEmbError(f"{out} holds a batch made with other settings ({diff[0]}: {before.get(diff[0])!r} "
                                f"-> {settings[diff[0]]!r}); use another out folder or the same settings")
    atomic_write_json(state_path, {"settings": settings, "config": asdict(cfg), "toucan_speakemb_version": __version__})

    bank_path = out / "voices.safetensors"
    if bank_path.exists():
        bank = VoiceBank.load(bank_path)
        if len(bank) != cfg.voices:
            raise SpeakEmbError(f"{bank_path} holds {len(bank)} voices, the batch wants {cfg.voices}; remove the "
                                f"out folder or use the same settings")
        log.info("voices: %d from %s", len(bank), bank_path)
    else:
        sampler = VoiceSampler(gen, cfg.seed, threshold)
        voices = sampler.take(cfg.voices)
        bank = VoiceBank.empty(gen.profile, {"generator": gen.describe()}).added(
            voices, dict(sampler.provenance(), via="batch_voices"))
        bank.save(bank_path)
        log.info("voices: %d new ones sampled (%d candidates drawn, rejected: %s)", len(bank), sampler.drawn,
                 sampler.rejected)
    # figures of each voice against the training speakers and the rest of the batch
    means, ids = gen.training_speakers()
    check = NoveltyCheck(means, ids, threshold, rule)
    check.add(bank.ids, bank.embeddings)
    figures = [check.judge(vid, s, e) for vid, s, e in zip(bank.ids, bank.seeds, bank.embeddings)]

    plan = sentence_plan(len(sentences), cfg.voices, cfg.utterances_per_voice, cfg.seed)
    jobs = []
    for i, v in enumerate(figures):
        for k in range(cfg.utterances_per_voice):
            wav = out / "wavs" / v.id / f"{v.id}_{k + 1:03d}.wav"
            jobs.append((i, v, sentences[plan[i, k]], wav))
    todo = [j for j in jobs if not j[3].with_suffix(".json").exists()]
    log.info("utterances: %d of %d done, %d to make", len(jobs) - len(todo), len(jobs), len(todo))
    if todo and adapter is None:
        adapter = models.load(cfg.device, cfg.language)
    synthesis = Synthesis(adapter, gen, cfg.seed, distinctness_against="the other voices of the batch") if todo else None
    skipped: List[Dict] = []
    left = np.bincount([j[0] for j in todo], minlength=cfg.voices)
    done_voice = {i: cfg.utterances_per_voice - int(left[i]) for i in range(cfg.voices)}
    bars = _bars(progress, cfg.voices, len(jobs), len(jobs) - len(todo), int((left == 0).sum()))
    made = 0
    try:
        for i, v, text, wav in todo:
            if stop_after is not None and made >= stop_after:
                log.info("stopped after %d utterances (run again to finish)", made)
                break
            try:
                synthesis.speak(v, text, wav, speaker_id=v.id)
            except Exception as e:  # batch work: one bad utterance is logged and skipped, the rest go on
                reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                log.warning("skipped %s (%r): %s", wav.name, text, reason)
                skipped.append({"file": str(wav.relative_to(out)), "voice_id": v.id, "text": text, "reason": reason})
            else:
                made += 1
            bars.utterance()
            done_voice[i] += 1
            if done_voice[i] == cfg.utterances_per_voice:
                bars.voice()
    finally:
        bars.close()
        rows = _collect(out, jobs)
        _write_metadata(out, rows)
        if skipped:
            buf = io.StringIO()
            w = csv.DictWriter(buf, ["file", "voice_id", "text", "reason"])
            w.writeheader()
            w.writerows(skipped)
            atomic_write_text(out / "skipped.csv", buf.getvalue())
    log.info("%d utterances in %s (%d made now, %d skipped)", len(rows), out, made, len(skipped))
    return out / "metadata.csv"


def _collect(out: Path, jobs) -> List[Dict]:
    rows = []
    for _, v, text, wav in jobs:
        side = wav.with_suffix(".json")
        if not side.exists():
            continue
        d = json.loads(side.read_text(encoding="utf-8"))
        rows.append({"file": str(wav.relative_to(out)), "voice_id": d["voice_id"], "seed": d["seed"],
                     "text": d["text"], "duration_s": d["duration_s"],
                     "nearest_training_cosine": d["nearest_training_cosine"],
                     "nearest_voice_cosine": d["nearest_voice_cosine"],
                     # sidecars of older versions name the threshold by the one rule they knew
                     "threshold": d.get("threshold", d.get("same_speaker_threshold")),
                     "threshold_rule": d.get("threshold_rule", "same-speaker")})
    return rows


class _bars:
    """Two progress bars: voices finished and utterances made."""

    def __init__(self, progress: bool, voices: int, utterances: int, utt_done: int, voices_done: int):
        self.v = self.u = None
        if progress:
            from tqdm.auto import tqdm

            self.v = tqdm(total=voices, initial=voices_done, desc="voices", unit="voice", position=0,
                          dynamic_ncols=True)
            self.u = tqdm(total=utterances, initial=utt_done, desc="utterances", unit="utt", position=1,
                          dynamic_ncols=True)

    def utterance(self):
        if self.u is not None:
            self.u.update(1)

    def voice(self):
        if self.v is not None:
            self.v.update(1)

    def close(self):
        for b in (self.u, self.v):
            if b is not None:
                b.close()

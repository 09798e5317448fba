"""Batch synthesis: N new voices, each saying a few sentences, as a corpus folder (recipes/batch_voices).

Output folder::

    batch.json                 the settings the batch is made with (a re-run must use the same ones)
    voices.safetensors         the voice bank: ids, seeds, embeddings, novelty figures, provenance
    plan.json                  every utterance of the batch: index, voice, its seed, text, synthesis seed, file
    wavs/<voice id>/<voice id>_NNN.wav   one folder per new voice (speaker id = voice id)
    wavs/<voice id>/<voice id>_NNN.json  its sidecar (text, voice, seed, duration, figures)
    wavs/<voice id>/<voice id>_NNN.skipped.json  why Toucan could not make it (tried again on the next run)
    shares/<share>.json        which voices a worker (shard / torchrun rank) owns and whether it finished
    metadata.csv               file, voice_id, seed, text, duration_s, nearest_training_cosine,
                               nearest_voice_cosine, threshold, threshold_rule (written by the merge)
    skipped.csv                utterances Toucan could not synthesise, with the reason (only if any)

Plan, then synthesise. Drawing the voices is global (novelty against the training speakers, distinctness
among all voices of the batch) and cheap: :func:`plan_batch` writes the bank and the plan once. Synthesis
then runs over the plan split by voice (``shard=K/N`` for job arrays, then the torchrun ranks within a
shard); every utterance's randomness is seeded from its voice and text, so the files are the same whatever
the number of workers. :func:`merge_batch` writes metadata.csv, and refuses while any utterance is missing.

Resumable per worker: every file is written atomically; an utterance counts as done when its sidecar is
there and its wav reads back whole with the sidecar's length, so a killed worker started again keeps what
is finished and makes the rest (a wav without a sidecar, or one that does not read back, is made again).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from toucan_speakemb.core.distributed import Dist, check_device_name, collective, parse_shard, resolve_device, share
from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.core.fileio import atomic_write_json, atomic_write_text, check_output_folder, read_json
from toucan_speakemb.core.version import __version__
from toucan_speakemb.generate.generator import Generator
from toucan_speakemb.voices.bank import VoiceBank
from toucan_speakemb.voices.novelty import NoveltyCheck, VoiceSampler, resolve_rule

from toucan_speakemb.adapters.synthesis import Synthesis, utterance_seed
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
    device: str = "auto"              # auto (cuda:LOCAL_RANK when CUDA is there, else cpu), cpu, cuda, cuda:<i>
    shard: Optional[str] = None       # "K/N": this job-array task makes share K of N (then merge)
    log_every: int = 50               # without a terminal: one progress line per this many utterances

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
        for key in ("voices", "utterances_per_voice", "log_every"):
            v = getattr(cfg, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SpeakEmbError(f"{what}: {key} must be a whole number >= 1; got {v!r}")
        if not isinstance(cfg.seed, int) or not 0 <= cfg.seed < 2**63:
            raise SpeakEmbError(f"{what}: seed must be a whole number in 0..2^63-1; got {cfg.seed!r}")
        for key in ("generator", "sentences", "out"):
            if not getattr(cfg, key):
                raise SpeakEmbError(f"{what}: '{key}' is required")
        check_device_name(cfg.device, f"{what}: device")
        if cfg.shard is not None:
            parse_shard(cfg.shard, f"{what}: shard")
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


PLAN_FORMAT = 1


def _settings(cfg: BatchConfig, gen, sentences: List[str], threshold: float, rule: str) -> Dict:
    """What fixes the batch's content: a re-run must match it."""
    return {"generator_fingerprint": gen.fingerprint, "profile": gen.profile.name, "seed": cfg.seed,
            "threshold": threshold, "threshold_rule": rule, "voices": cfg.voices, "utterances_per_voice": cfg.utterances_per_voice,
            "sentences_sha256": hashlib.sha256("\n".join(sentences).encode()).hexdigest()}


@dataclass
class Plan:
    """The bank and every utterance of a batch; ``jobs`` in plan order, grouped by voice."""

    out: Path
    settings: Dict
    bank: VoiceBank
    jobs: List[Dict]   # index, voice_id, voice_index, seed, text, synthesis_seed, file (relative to out)

    def voices_of(self, k: int, n: int) -> List[int]:
        """The voice indices of share ``k`` of ``n`` (0-based)."""
        return share(range(len(self.bank)), k, n)

    @classmethod
    def load(cls, out) -> "Plan":
        out = Path(out)
        d = read_json(out / "plan.json", "batch plan")
        if d.get("kind") != "batch-plan" or d.get("format") != PLAN_FORMAT:
            raise SpeakEmbError(f"{out / 'plan.json'} is not a batch plan of this version (format {PLAN_FORMAT})")
        return cls(out, d["settings"], VoiceBank.load(out / "voices.safetensors"), d["jobs"])


def plan_batch(cfg: BatchConfig, gen=None, models=None) -> Plan:
    """Write (or check and read) the batch's settings, voice bank and plan; nothing is synthesised.

    Deterministic: every process that plans the same settings writes the same files (each atomically, the
    plan last), so job-array tasks may all call it; a finished plan is only read."""
    check_output_folder(cfg.out, option="out", resume_marker="batch.json")  # before any work
    gen = gen if gen is not None else Generator.load(cfg.generator, resolve_device(cfg.device, "device"))
    sentences = read_sentences(cfg.sentences)
    if models is not None:
        models.check_generator(gen)
    threshold, rule = resolve_rule(gen, cfg.threshold)
    out = Path(cfg.out)
    settings = _settings(cfg, gen, sentences, threshold, rule)
    state_path = out / "batch.json"
    if state_path.exists():
        before = read_json(state_path, "batch state").get("settings", {})
        diff = [k for k in settings if before.get(k) != settings[k]]
        if diff:
            raise SpeakEmbError(f"{out} holds a batch made with other settings ({diff[0]}: {before.get(diff[0])!r} "
                                f"-> {settings[diff[0]]!r}); use another out folder or the same settings")
        if (out / "plan.json").exists():
            return Plan.load(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(state_path, {"settings": settings, "config": {k: v for k, v in asdict(cfg).items()
                                                                     if k not in ("shard", "log_every")},
                                   "toucan_speakemb_version": __version__})
    bank_path = out / "voices.safetensors"
    if bank_path.exists():
        bank = VoiceBank.load(bank_path)
        if len(bank) != cfg.voices:
            raise SpeakEmbError(f"{bank_path} holds {len(bank)} voices, the batch wants {cfg.voices}; remove the "
                                f"out folder or use the same settings")
        log.info("voices: %d from %s", len(bank), bank_path)
    else:
        sampler = VoiceSampler(gen, cfg.seed, cfg.threshold)
        voices = sampler.take(cfg.voices)
        bank = VoiceBank.empty(gen.profile, {"generator": gen.describe()}).added(
            voices, dict(sampler.provenance(), via="batch_voices"))
        bank.save(bank_path)
        log.info("voices: %d new ones sampled (%d candidates drawn, rejected: %s)", len(bank), sampler.drawn,
                 sampler.rejected)
    order = sentence_plan(len(sentences), cfg.voices, cfg.utterances_per_voice, cfg.seed)
    jobs = []
    for i, (vid, seed) in enumerate(zip(bank.ids, bank.seeds)):
        for k in range(cfg.utterances_per_voice):
            text = sentences[order[i, k]]
            jobs.append({"index": len(jobs), "voice_id": vid, "voice_index": i, "seed": int(seed), "text": text,
                         "synthesis_seed": utterance_seed(vid, text), "file": f"wavs/{vid}/{vid}_{k + 1:03d}.wav"})
    atomic_write_json(out / "plan.json", {"kind": "batch-plan", "format": PLAN_FORMAT, "settings": settings,
                                          "voices": bank.ids, "jobs": jobs})
    log.info("plan: %d voices x %d utterances in %s", cfg.voices, cfg.utterances_per_voice, out / "plan.json")
    return Plan(out, settings, bank, jobs)


def _sidecar(out: Path, job: Dict) -> Optional[Dict]:
    side = (out / job["file"]).with_suffix(".json")
    try:
        d = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if d.get("voice_id") == job["voice_id"] and d.get("text") == job["text"] else None


def is_done(out: Path, job: Dict, verify: bool = True) -> bool:
    """The utterance is finished: its sidecar matches the plan and (``verify``) its wav reads back whole."""
    car = _sidecar(out, job)
    if car is None:
        return False
    wav = out / job["file"]
    if not verify:
        return wav.is_file()
    import soundfile as sf

    try:
        wave, sr = sf.read(wav, dtype="int16")
    except Exception:  # unreadable: partial, truncated or damaged
        return False
    return sr == car.get("sample_rate") and abs(len(wave) / sr - float(car.get("duration_s", -1))) <= 1e-3


def _skip_marker(out: Path, job: Dict) -> Path:
    return (out / job["file"]).with_suffix(".skipped.json")


def share_name(shard, rank: int, world: int) -> str:
    k, n = shard
    return f"shard-{k}-of-{n}" + (f".rank-{rank}-of-{world}" if world > 1 else "")


def synthesise_share(plan: Plan, gen, adapter, voice_indices: Sequence[int], name: str = "all",
                     progress: bool = True, stop_after: Optional[int] = None, log_every: int = 50,
                     position: int = 0) -> Dict[str, int]:
    """Make the utterances of these voices that are not done; returns counts (made, skipped, left, done)."""
    out = plan.out
    mine = set(voice_indices)
    jobs = [j for j in plan.jobs if j["voice_index"] in mine]
    share_path = out / "shares" / f"{name}.json"
    owned = [plan.bank.ids[i] for i in sorted(mine)]
    atomic_write_json(share_path, {"voices": owned, "utterances": len(jobs), "finished": False})
    redo = []
    todo = []
    for j in jobs:
        if is_done(out, j):
            continue
        if (out / j["file"]).with_suffix(".json").exists() or (out / j["file"]).exists():
            redo.append(j["file"])
        todo.append(j)
    if redo:
        log.warning("%s: %d partial or damaged utterance(s) are made again (e.g. %s)", name, len(redo), redo[0])
    log.info("%s: %d voices, %d utterances: %d done, %d to make", name, len(owned), len(jobs),
             len(jobs) - len(todo), len(todo))
    counts = {"made": 0, "skipped": 0, "left": len(todo), "done": len(jobs) - len(todo)}
    if not todo:
        atomic_write_json(share_path, {"voices": owned, "utterances": len(jobs), "finished": True})
        return counts
    # figures of each voice against the training speakers and every voice of the batch
    means, ids = gen.training_speakers()
    check = NoveltyCheck(means, ids, plan.settings["threshold"], plan.settings.get("threshold_rule", "same-speaker"))
    check.add(plan.bank.ids, plan.bank.embeddings)
    voices = {i: check.judge(plan.bank.ids[i], plan.bank.seeds[i], plan.bank.embeddings[i]) for i in mine}
    synthesis = Synthesis(adapter, gen, plan.settings["seed"], distinctness_against="the other voices of the batch")
    started = time.time()  # wall clock (unix seconds): shares of one run can be lined up (benchmark)
    meter = Progress(len(jobs), len(jobs) - len(todo), name, progress, log_every, position)
    try:
        for j in todo:
            if stop_after is not None and counts["made"] + counts["skipped"] >= stop_after:
                log.info("%s: stopped after %d utterances (run again to finish)", name, stop_after)
                break
            v, wav, marker = voices[j["voice_index"]], out / j["file"], _skip_marker(out, j)
            try:
                synthesis.speak(v, j["text"], wav, speaker_id=v.id)
            except Exception as e:  # batch work: one bad utterance is logged and skipped, the rest go on
                reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                log.warning("skipped %s (%r): %s", wav.name, j["text"], reason)
                atomic_write_json(marker, {"file": j["file"], "voice_id": v.id, "text": j["text"], "reason": reason})
                counts["skipped"] += 1
            else:
                marker.unlink(missing_ok=True)
                counts["made"] += 1
            counts["left"] -= 1
            meter.update()
    finally:
        meter.close()
    atomic_write_json(share_path, {"voices": owned, "utterances": len(jobs), "finished": counts["left"] == 0,
                                   "made": counts["made"], "skipped": counts["skipped"], "started": started,
                                   "ended": time.time(), "device": str(getattr(adapter.interface, "device", ""))})
    return counts


def merge_batch(out) -> Path:
    """Write metadata.csv (and skipped.csv) of a batch whose every utterance is made or skipped; a plan with
    missing utterances is refused, naming them and the shares that own them."""
    out = Path(out)
    if not (out / "plan.json").exists():
        raise SpeakEmbError(f"{out} holds no batch plan (plan.json); make the batch first")
    plan = Plan.load(out)
    rows, skipped, missing = [], [], []
    for j in plan.jobs:
        car = _sidecar(out, j)
        if car is not None and (out / j["file"]).is_file():
            rows.append({"file": j["file"], **{k: car[k] for k in METADATA_COLUMNS[1:]}})
        elif _skip_marker(out, j).exists():
            skipped.append(read_json(_skip_marker(out, j), "skip record"))
        else:
            missing.append(j)
    if missing:
        voices = sorted({j["voice_id"] for j in missing})
        owners = {}
        for f in sorted((out / "shares").glob("*.json")):
            for vid in read_json(f, "share record").get("voices", []):
                owners.setdefault(vid, f.stem)
        unfinished = sorted({owners[v] for v in voices if v in owners})
        nobody = [v for v in voices if v not in owners]
        raise SpeakEmbError(
            f"{out}: {len(missing)} of {len(plan.jobs)} utterances are missing (e.g. {missing[0]['file']}) in "
            f"{len(voices)} voice(s); unfinished: {', '.join(unfinished) or 'none'}"
            + (f"; not started by any worker: {', '.join(nobody[:5])}{' ...' if len(nobody) > 5 else ''}"
               if nobody else "") + "; run those shares (the same command) again, then merge")
    _write_metadata(out, rows)
    if skipped:
        buf = io.StringIO()
        w = csv.DictWriter(buf, ["file", "voice_id", "text", "reason"], extrasaction="ignore")
        w.writeheader()
        w.writerows(skipped)
        atomic_write_text(out / "skipped.csv", buf.getvalue())
    else:
        (out / "skipped.csv").unlink(missing_ok=True)
    log.info("merged: %d utterances in %s (%d skipped)", len(rows), out / "metadata.csv", len(skipped))
    return out / "metadata.csv"


def _write_metadata(out: Path, rows: List[Dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, METADATA_COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "metadata.csv", buf.getvalue())


def batch_device(device: str, dist: Dist) -> str:
    """The device of this process: ``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is there, else ``cpu``; a bare
    ``cuda`` under torchrun also means the rank's own GPU."""
    if device == "cuda" and dist.world > 1:
        device = f"cuda:{dist.local_rank}"
    return resolve_device(device)


def run_batch(cfg: BatchConfig, adapter=None, progress: bool = True, stop_after: Optional[int] = None,
              merge: bool = True) -> Optional[Path]:
    """Plan the batch (or read its plan), make this process's share, and merge when the whole plan is made.

    The share: voices split by ``cfg.shard`` (K/N, job arrays), then by torchrun rank. Returns the path of
    metadata.csv once merged, else None (a shard whose others are not finished, or ``stop_after``).
    ``adapter``: a ready ToucanAdapter (tests pass one around a stand-in); by default the interface is built
    from ``toucan_dir`` / ``tts_model`` / ``vocoder`` on the resolved device, and only if there is something
    left to synthesise. ``stop_after`` stops after that many utterances (a stand-in for a kill in tests).
    """
    check_output_folder(cfg.out, option="out", resume_marker="batch.json")  # before any work
    dist = Dist()
    try:
        device = collective(dist, batch_device, cfg.device, dist)  # Toucan and the generator (the plan's voices)
        gen = Generator.load(cfg.generator, device)
        read_sentences(cfg.sentences)  # checked before Toucan is looked at
        models = None
        if adapter is None:
            models = ToucanModels(cfg.toucan_dir, cfg.tts_model, cfg.vocoder)
        else:
            adapter.check_generator(gen)
        if dist.rank == 0:
            collective(dist, plan_batch, cfg, gen, models)
        else:
            collective(dist, lambda: None)
        dist.barrier()
        plan = Plan.load(cfg.out)
        k, n = parse_shard(cfg.shard, "shard") if cfg.shard else (1, 1)
        voices = share(plan.voices_of(k - 1, n), dist.rank, dist.world)
        name = share_name((k, n), dist.rank, dist.world)
        left = [j for j in plan.jobs if j["voice_index"] in set(voices) and not is_done(plan.out, j, verify=False)]
        if left and adapter is None:
            log.info("%s: Toucan on %s", name, device)
            adapter = models.load(device, cfg.language)
        t0 = time.monotonic()
        counts = synthesise_share(plan, gen, adapter, voices, name, progress, stop_after, cfg.log_every,
                                  position=dist.rank)
        log.info("%s: %d made, %d skipped, %d left in %.1f s", name, counts["made"], counts["skipped"],
                 counts["left"], time.monotonic() - t0)
        unfinished = dist.sum(counts["left"])
        dist.barrier()
        if not merge or dist.rank != 0 or unfinished:
            return None
        if n > 1:
            try:
                return merge_batch(plan.out)
            except SpeakEmbError:
                log.info("%s done; other shards are not finished: merge when they are", name)
                return None
        return merge_batch(plan.out)
    finally:
        dist.close()


def _eta(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """Utterances of one worker: a bar on a terminal (``progress``), else one log line per ``every``
    utterances, both with utterances per second and an ETA."""

    def __init__(self, total: int, done: int, name: str, progress: bool, every: int = 50, position: int = 0):
        self.total, self.done, self.name, self.every = total, done, name, every
        self.made, self.t0, self.bar = 0, time.monotonic(), None
        if progress and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc=name, unit="utt", position=position, dynamic_ncols=True)

    def line(self) -> str:
        rate = self.made / max(time.monotonic() - self.t0, 1e-9)
        left = self.total - self.done
        eta = _eta(left / rate) if rate > 0 else "?"
        return f"{self.name}: {self.done}/{self.total} utterances, {rate:.2f} utt/s, ETA {eta}"

    def update(self):
        self.done += 1
        self.made += 1
        if self.bar is not None:
            self.bar.update(1)
        elif (self.made % self.every == 0 or self.done == self.total):
            log.info(self.line())

    def close(self):
        if self.bar is not None:
            self.bar.close()

"""CLI commands that put voices into Toucan: ``synth`` and the voice bank (``voices list|show|add|remove|export``)."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import List, Optional

import click
import numpy as np

from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.core.fileio import atomic_write_text, check_output, utc_timestamp
from toucan_speakemb.voices.novelty import RULE_HELP
from toucan_speakemb.cli.generate import condition_options, request_from, slider_options
from toucan_speakemb.cli.options import device_option

log = logging.getLogger("toucan_speakemb.cli.main")

_GENERATOR_HELP = "A run folder from `train` (or its generator.safetensors). Default: $TOUCAN_SPEAKEMB_GENERATOR."
_THRESHOLD_HELP = RULE_HELP + "."


def _load_generator(path: Optional[str], device: str):
    from toucan_speakemb.generate.generator import Generator

    path = path or os.environ.get("TOUCAN_SPEAKEMB_GENERATOR")
    if not path:
        raise SpeakEmbError("no generator: give --generator RUN_DIR (a run folder from `toucan-speakemb train`) or set "
                            "TOUCAN_SPEAKEMB_GENERATOR")
    return Generator.load(path, device)


def _read_texts(texts, text_file) -> List[str]:
    out = [t for t in texts]
    if text_file:
        p = Path(text_file)
        if not p.is_file():
            raise SpeakEmbError(f"text file not found: {p}")
        try:
            out += [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise SpeakEmbError(f"text file {p} is not UTF-8 text") from None
    out = [t.strip() for t in out]
    if not out:
        raise SpeakEmbError("nothing to say: give one or more TEXTs or --text-file FILE")
    if any(not t for t in out):
        raise SpeakEmbError("an empty TEXT was given; every utterance needs some text")
    return out


def _outputs(out: Path, n: int, overwrite: bool) -> List[Path]:
    """One wav per utterance: OUT itself for one, OUT_001.wav ... for several; each with its sidecar, under the
    output rule (neither may exist without --overwrite; OUT's folder is made)."""
    targets = [out] if n == 1 else [out.with_name(f"{out.stem}_{i + 1:03d}{out.suffix}") for i in range(n)]
    for wav in targets:
        check_output(wav, (".wav",), overwrite=overwrite, option="-o", what="audio", make_parent=True,
                     companions=[wav.with_suffix(".json")])
    return targets


def _check_bank_name(bank, option: str) -> None:
    """A voice bank is a .safetensors file; it is changed in place (append mode), so it may exist."""
    check_output(bank, (".safetensors",), overwrite=True, option=option, what="a voice bank")


@click.command(context_settings={"show_default": True})
@click.argument("texts", nargs=-1, metavar="[TEXT]...")
@click.option("--text-file", type=click.Path(dir_okay=False), help="A UTF-8 file with one utterance per line.")
@click.option("--random-speaker", is_flag=True,
              help="A fresh voice from the generator for each utterance (new: no training speaker is as close; "
                   "distinct: no other voice of this run or of --bank is).")
@click.option("--voice", "voice", metavar="ID", help="Re-make this voice (<generator fingerprint>-<seed>) instead.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None,
              help="Draw seed: the same seed gives the same voices. Default: a fresh one (written to the sidecar).")
@click.option("--same-voice", is_flag=True, help="One voice for all the utterances.")
@click.option("--generator", "generator", type=click.Path(), metavar="RUN_DIR", help=_GENERATOR_HELP)
@click.option("--threshold", default=None, metavar="RULE|COSINE", help=_THRESHOLD_HELP)
@click.option("--bank", type=click.Path(dir_okay=False), metavar="BANK",
              help="A voice bank: new voices must also differ from its voices, and are added to it.")
@click.option("--toucan-dir", type=click.Path(), envvar="TOUCAN_DIR",
              help="An IMS-Toucan checkout (v2.0-v2.2 or v3.0-v3.1.2; the release is read from its source). "
                   "Default: $TOUCAN_DIR.")
@click.option("--tts-model", type=click.Path(), metavar="PATH",
              help="Toucan TTS checkpoint. Default: where the release's own downloader puts it (v2.x "
                   "Models/FastSpeech2_Meta/best.pt, v3.0-v3.1.1 Models/ToucanTTS_Meta/best.pt of the checkout; "
                   "v3.1.2 ToucanTTS.pt from the Hugging Face cache).")
@click.option("--vocoder", type=click.Path(), metavar="PATH",
              help="Vocoder checkpoint. Default: v2.x Models/HiFiGAN_combined/best.pt, v3.0-v3.1.1 "
                   "Models/Vocoder/best.pt; v3.1.2 Vocoder.pt from the cache.")
@click.option("--language", default=None, help="Toucan language code (default: en for v2.2, eng for v3).")
@device_option
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False), metavar="OUT.wav",
              help="Output wav (its folder is made); several utterances give OUT_001.wav, OUT_002.wav, ... Each "
                   "gets OUT.json beside it.")
@click.option("--overwrite", is_flag=True, help="Replace existing wavs and sidecars (refused otherwise).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@condition_options
@slider_options
def synth(texts, text_file, random_speaker, voice, seed, same_voice, generator, threshold, bank, toucan_dir,
          tts_model, vocoder, language, device, out, overwrite, no_progress, gender, age, accent, extra_conditions, guidance,
          sliders, slider_method, slider_strength):
    """Synthesise TEXT with IMS Toucan in voices no real speaker has.

    \b
    Examples:
      toucan-speakemb synth "Hello there." --random-speaker --generator runs/default \\
          --toucan-dir IMS-Toucan --tts-model ToucanTTS.pt --vocoder Vocoder.pt -o hello.wav
      toucan-speakemb synth --text-file lines.txt --random-speaker --seed 7 -o out/line.wav
      toucan-speakemb synth "Again, please." --voice 3fa2c1d0-812736 -o again.wav
      toucan-speakemb synth "Lower, please." --random-speaker --slider pc1=-1.5 -o lower.wav

    Each wav gets a JSON sidecar: voice id, seeds, generator, profile, Toucan release, and the voice's cosine
    to its nearest training speaker and to the nearest other voice, next to the threshold and its rule
    (--threshold). Same seed, same audio: Toucan's randomness is seeded per utterance from the voice and the text.
    Toucan and the generator run on --device.
    """
    from toucan_speakemb.adapters import ToucanModels, synthesis
    from toucan_speakemb.core.distributed import resolve_device

    if not random_speaker and not voice:
        raise SpeakEmbError("say which voice: --random-speaker (fresh voices) or --voice ID")
    if voice and seed is not None:
        raise SpeakEmbError("--voice ID already fixes the voice; --seed is for --random-speaker")
    lines = _read_texts(texts, text_file)
    targets = _outputs(Path(out), len(lines), overwrite)
    if bank:
        _check_bank_name(bank, "--bank")
    device = resolve_device(device, "--device")  # Toucan and the generator run there
    cars, added = synthesis.synth(
        lines, targets, _load_generator(generator, device), ToucanModels(toucan_dir, tts_model, vocoder),
        voice_id=voice, seed=seed, same_voice=same_voice, bank=Path(bank) if bank else None, threshold=threshold,
        request=request_from(gender, age, accent, extra_conditions, guidance, sliders, slider_method, slider_strength),
        device=device, language=language, progress=not no_progress)
    if len(cars) > 1 and not no_progress:
        click.echo(f"{len(cars)} utterances, {len({c['voice_id'] for c in cars})} voices -> {targets[0].parent}")
    else:
        for wav, c in zip(targets, cars):
            click.echo(f"{wav}  voice {c['voice_id']}  (nearest training speaker cos {c['nearest_training_cosine']:.3f}, "
                       f"threshold {c['threshold']:.3f}, {c['threshold_rule']}; synthesis seed {c['synthesis_seed']})")
    if bank and not voice:
        click.echo(f"{added} voices added to {bank}")


# ---- the voice bank -------------------------------------------------------------------------------------------
@click.group(context_settings={"show_default": True})
def voices():
    """Manage a voice bank: voices re-made by id, each new (no training speaker is closer than the
    novelty threshold, see --threshold of `voices add`) and distinct (no other voice of the bank is)."""


def _load_bank(path):
    from toucan_speakemb.voices.bank import VoiceBank

    return VoiceBank.load(path)


def _rows(bank):
    near = bank.nearest_voice_cosines()
    novelty = bank.nearest_training_cosine if bank.nearest_training_cosine is not None else np.full(len(bank), np.nan)
    return [(vid, int(s), float(n), float(d)) for vid, s, n, d in zip(bank.ids, bank.seeds, novelty, near)]


def _fmt(x: float) -> str:
    return "-" if np.isnan(x) else f"{x:.3f}"


@voices.command("list")
@click.argument("bank", type=click.Path(dir_okay=False))
def voices_list(bank):
    """The voices of BANK with their cosine to the nearest training speaker and to the nearest other voice."""
    b = _load_bank(bank)
    thr = [a.get("threshold") for a in b.provenance.get("additions", []) if a.get("threshold") is not None]
    click.echo(f"{bank}: {len(b)} voices, profile {b.profile.name} ({b.profile.dim}-dim)"
               + (f", threshold {thr[-1]:.3f}" if thr else ""))
    click.echo(f"{'voice id':<28} {'seed':>20} {'train cos':>9} {'voice cos':>9}")
    for vid, s, n, d in _rows(b):
        click.echo(f"{vid:<28} {s:>20} {_fmt(n):>9} {_fmt(d):>9}")


@voices.command("show")
@click.argument("bank", type=click.Path(dir_okay=False))
@click.argument("voice_id")
def voices_show(bank, voice_id):
    """One voice of BANK as JSON: id, seed, figures, how it was drawn."""
    b = _load_bank(bank)
    i = b.index(voice_id)
    _, s, n, d = _rows(b)[i]
    emb = b.embeddings[i]
    click.echo(json.dumps({"voice_id": voice_id, "seed": s, "profile": b.profile.name, "dim": b.profile.dim,
                           "nearest_training_cosine": None if np.isnan(n) else round(n, 6),
                           "nearest_voice_cosine": None if np.isnan(d) else round(d, 6),
                           "norm": round(float(np.linalg.norm(emb)), 6),
                           "embedding_head": [round(float(x), 6) for x in emb[:8]],
                           "provenance": b.provenance}, indent=2))


@voices.command("add")
@click.argument("bank", type=click.Path(dir_okay=False))
@click.option("--generator", "generator", type=click.Path(), metavar="RUN_DIR", help=_GENERATOR_HELP)
@click.option("-n", "n", type=click.IntRange(min=1), default=10, help="Voices to add.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None,
              help="Draw seed (same seed, same bank, same voices). Default: a fresh one, recorded in the bank.")
@click.option("--threshold", default=None, metavar="RULE|COSINE", help=_THRESHOLD_HELP)
@click.option("--max-draws", type=click.IntRange(min=1), default=1000,
              help="Give up after this many rejected candidates in a row.")
@device_option
@condition_options
@slider_options
def voices_add(bank, generator, n, seed, threshold, max_draws, device, gender, age, accent, extra_conditions,
               guidance, sliders, slider_method, slider_strength):
    """Sample N new, distinct voices into BANK (made if missing)."""
    from toucan_speakemb.core.distributed import resolve_device
    from toucan_speakemb.voices.novelty import VoiceSampler
    from toucan_speakemb.voices.bank import VoiceBank

    _check_bank_name(bank, "BANK")
    gen = _load_generator(generator, resolve_device(device, "--device"))
    b = VoiceBank.load(bank) if Path(bank).exists() else VoiceBank.empty(gen.profile, {"generator": gen.describe()})
    b.check_generator(gen, bank)
    sampler = VoiceSampler(gen, seed, threshold, b, max_draws=max_draws,
                           request=request_from(gender, age, accent, extra_conditions, guidance, sliders,
                                                slider_method, slider_strength))
    new = sampler.take(n)
    b.added(new, dict(sampler.provenance(), created=utc_timestamp(), via="voices add", n=n)).save(bank)
    p = sampler.provenance()
    click.echo(f"{n} voices added to {bank} ({len(b) + n} in all); {p['candidates_drawn']} candidates drawn, "
               f"{p['rejected']['training speaker']} too close to a training speaker, "
               f"{p['rejected']['other voice']} too close to another voice (threshold {p['threshold']:.3f}, "
               f"rule {p['threshold_rule']}, "
               f"draw seed {p['draw_seed']})")


@voices.command("remove")
@click.argument("bank", type=click.Path(dir_okay=False))
@click.argument("voice_ids", nargs=-1, required=True)
def voices_remove(bank, voice_ids):
    """Remove voices from BANK by id."""
    b = _load_bank(bank)
    b.without(voice_ids).save(bank)
    click.echo(f"{len(voice_ids)} voices removed from {bank} ({len(b) - len(voice_ids)} left)")


@voices.command("export")
@click.argument("bank", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False),
              help=".npy (the bare (n, d) float32 array), .npz (interchange: embeddings, speaker_ids = voice ids) "
                   "or .csv (id, seed, figures). Its folder must exist.")
@click.option("--ids", "ids", multiple=True, metavar="ID", help="Only these voices (repeatable).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
def voices_export(bank, out, ids, overwrite):
    """Write BANK's voices for other tools."""
    check_output(out, (".npy", ".npz", ".csv"), overwrite=overwrite, option="-o", what="an export")
    b = _load_bank(bank)
    if ids:
        for v in ids:
            b.index(v)  # an unknown id is an error, not an empty export
        b = b.without([v for v in b.ids if v not in set(ids)])
    suffix = Path(out).suffix.lower()
    if suffix == ".npy":
        b.save_npy(out)
    elif suffix == ".npz":
        from toucan_speakemb.core.embedding_set import EmbeddingSet

        EmbeddingSet(b.embeddings, b.ids, b.profile, [f"{v}/voice" for v in b.ids]).save(out)
    elif suffix == ".csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["voice_id", "seed", "nearest_training_cosine", "nearest_voice_cosine"])
        for vid, s, n, d in _rows(b):
            w.writerow([vid, s, "" if np.isnan(n) else f"{n:.6f}", "" if np.isnan(d) else f"{d:.6f}"])
        atomic_write_text(out, buf.getvalue())
    click.echo(f"{len(b)} voices written to {out}")


def register(main) -> None:
    main.add_command(synth)
    main.add_command(voices)

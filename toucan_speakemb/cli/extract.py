"""``toucan-speakemb extract`` and ``toucan-speakemb merge``: thin click commands over :mod:`toucan_speakemb.extract.pipeline`."""

from __future__ import annotations

from pathlib import Path

import click

from toucan_speakemb.core.profiles import DEFAULT_PROFILE, KNOWN_PROFILES, NATIVE, extractable_profiles

from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.cli.options import device_option


def _shard(ctx, param, value):
    if value is None:
        return None
    from toucan_speakemb.core.distributed import parse_shard

    try:
        return parse_shard(value)
    except SpeakEmbError as e:
        raise click.BadParameter(str(e).replace("--shard ", "")) from None


@click.command(context_settings={"max_content_width": 100})
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Embedding set to write (.safetensors, or .npz for the interchange format). The rejects file "
                   "goes beside it (OUT minus suffix + .rejects.csv), and while running, the work folder "
                   "OUT.work/. Its folder must exist; existing outputs are replaced only with --overwrite.")
@click.option("--corpus-type", type=click.Choice(["auto", "librispeech", "vctk", "folder", "manifest"]),
              default="auto", show_default=True,
              help="How to read CORPUS. auto: a .csv is a manifest, a folder with speaker-info.txt is VCTK, "
                   "one with SPEAKERS.TXT is LibriSpeech, anything else a folder of audio.")
@click.option("--speaker-regex", metavar="REGEX",
              help="Folder corpora: the speaker is the group 'speaker' (or group 1) of REGEX searched in each "
                   "file's path relative to CORPUS, instead of the parent folder's name.")
@click.option("--vctk-mic", default="mic1", show_default=True, type=click.Choice(["mic1", "mic2"]),
              help="VCTK 0.92 has every utterance from two microphones; use this one.")
@click.option("--profile", default=DEFAULT_PROFILE, show_default=True, type=click.Choice(extractable_profiles()),
              help="Embedding space. " + "; ".join(f"{p.name}: {p.description}" for p in KNOWN_PROFILES.values()
                                                   if p.extractor == "speechbrain")
                   + f"; {NATIVE}: Toucan's own 64/128-dim style embedding made by the checkout given with "
                     "--toucan-dir.")
@click.option("--encoder-dir", "encoder_dirs", multiple=True, metavar="[NAME=]DIR",
              help="Local SpeechBrain model folder(s) instead of downloading from the model hub (for "
                   "machines without internet): ecapa=DIR and/or xvector=DIR, or one DIR holding "
                   "spkrec-ecapa-voxceleb/ and spkrec-xvect-voxceleb/. Repeatable.")
@click.option("--model-cache", type=click.Path(file_okay=False, path_type=Path),
              help="Where hub models are downloaded to [default: ~/.cache/toucan_speakemb, or "
                   "$TOUCAN_SPEAKEMB_CACHE].")
@click.option("--toucan-dir", type=click.Path(file_okay=False, path_type=Path),
              help="toucan-native: a checkout of IMS Toucan v2.3 to v2.b whose style embedding to use.")
@click.option("--toucan-embedding-model", type=click.Path(dir_okay=False, path_type=Path),
              help="toucan-native: the embedding function weights [default: "
                   "TOUCAN_DIR/Models/Embedding/embedding_function.pt].")
@click.option("--toucan-vad/--no-toucan-vad", default=True, show_default=True,
              help="toucan-native: cut leading/trailing silence with Toucan's Silero VAD as its inference "
                   "interface does (needs the VAD from torch.hub once).")
@device_option
@click.option("--batch-size", type=click.IntRange(1),
              help="Utterances per batch at most [default: 32 on a GPU; 1 on CPU, where batching these models "
                   "is slower than one by one]. Batches hold utterances of similar length.")
@click.option("--max-batch-seconds", default=320.0, show_default=True, type=click.FloatRange(1.0),
              help="Padded audio per batch at most (rows x longest row, seconds); bounds memory.")
@click.option("--workers", default=-1, show_default=True, type=click.IntRange(-1),
              help="Processes decoding audio beside the encoder; -1 = cores minus one, 0 = none.")
@click.option("--chunk-size", default=512, show_default=True, type=click.IntRange(1),
              help="Utterances per checkpoint file (also written at least once a minute).")
@click.option("--min-seconds", default=0.5, show_default=True, type=click.FloatRange(0.0),
              help="Shorter files are rejected.")
@click.option("--shard", callback=_shard, metavar="K/N",
              help="Do only the K-th of N parts (1 <= K <= N) of the corpus, e.g. one job of a job array; "
                   "writes OUT.shard-K-of-N.safetensors. Join the parts with `toucan-speakemb merge`.")
@click.option("--speaker-means", is_flag=True,
              help="Also write one mean embedding per speaker (OUT minus suffix + .speaker-means.safetensors).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--keep-work", is_flag=True, help="Keep the work folder (checkpoint chunks) after finishing.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def extract(corpus, out, corpus_type, speaker_regex, vctk_mic, profile, encoder_dirs, model_cache, toucan_dir,
            toucan_embedding_model, toucan_vad, device, batch_size, max_batch_seconds, workers, chunk_size,
            min_seconds, shard, speaker_means, overwrite, keep_work, no_progress):
    """Embed every utterance of a speech CORPUS in the space a Toucan model is conditioned on.

    CORPUS is a LibriSpeech or VCTK folder, any folder of audio files (one sub-folder per speaker), or a CSV
    manifest (columns path, speaker; optional utterance_id, gender, age, accent). Audio is preprocessed as
    the chosen Toucan release does it (v2.2: mono, -30 LUFS, peak 1, 16 kHz, zeros trimmed; v3: mono,
    16 kHz). Files that cannot be used (corrupt, empty, silent, NaN, shorter than --min-seconds) are skipped
    and listed with the reason in the rejects file; stereo is mixed down and any sampling rate resampled.

    \b
    The run checkpoints into OUT.work/; after a crash or kill, run the same command again to resume.
    Several processes or GPUs: torchrun --nproc_per_node 4 -m toucan_speakemb.cli.main extract CORPUS -o OUT
    Job arrays: --shard K/N per job, then: toucan-speakemb merge OUT.shard-*-of-N.safetensors -o OUT

    \b
    Examples:
      toucan-speakemb extract /data/LibriSpeech/train-clean-100 -o libri.safetensors --speaker-means
      toucan-speakemb extract /data/VCTK-Corpus-0.92 -o vctk.safetensors --encoder-dir /models
      toucan-speakemb extract clips.csv -o clips.safetensors --profile toucan-v3
    """
    from toucan_speakemb.extract.corpora import load_corpus
    from toucan_speakemb.extract.encoders import HUB_IDS, offline_copy, parse_encoder_dirs, resolve_device
    from toucan_speakemb.extract.pipeline import ExtractConfig, shard_output
    from toucan_speakemb.extract.pipeline import extract as run_extract
    from toucan_speakemb.core.profiles import get_profile

    if toucan_dir is not None and profile != NATIVE:
        raise SpeakEmbError(f"--toucan-dir is only used with --profile {NATIVE}")
    if profile == NATIVE and toucan_dir is None:
        raise SpeakEmbError(f"--profile {NATIVE} needs --toucan-dir (a checkout of IMS Toucan v2.3 to v2.b)")
    if encoder_dirs and profile == NATIVE:
        made = [n for n in extractable_profiles() if n != NATIVE]
        raise SpeakEmbError(f"--encoder-dir is for the SpeechBrain profiles ({', '.join(made)})")
    if shard and speaker_means:
        raise SpeakEmbError("--speaker-means needs every utterance of a speaker: give it to `merge` instead "
                            "of to a --shard run")
    check_outputs(shard_output(out, *shard) if shard else out, overwrite, speaker_means)
    dirs = parse_encoder_dirs(encoder_dirs, get_profile(profile)) if encoder_dirs else {}
    resolve_device(device, "--device")  # a device this torch cannot use, and an unreachable hub, fail before any work
    for comp, _ in get_profile(profile).components if profile != "toucan-native" else ():
        if comp not in dirs:
            offline_copy(HUB_IDS[comp], model_cache)
    ctype, utts = load_corpus(corpus, corpus_type, speaker_regex, vctk_mic)
    click.echo(f"{len(utts)} utterances of {len(set(u.speaker_id for u in utts))} speakers ({ctype} corpus "
               f"{corpus})", err=True)
    cfg = ExtractConfig(profile=profile, encoder_dirs=dirs, model_cache=model_cache, toucan_dir=toucan_dir,
                        toucan_weights=toucan_embedding_model, toucan_vad=toucan_vad, device=device,
                        batch_size=batch_size, max_batch_seconds=max_batch_seconds, workers=workers,
                        chunk_size=chunk_size, min_seconds=min_seconds, shard=shard, speaker_means=speaker_means,
                        overwrite=overwrite, keep_work=keep_work, progress=not no_progress,
                        corpus_info={"type": ctype, "root": str(Path(corpus).resolve())})
    res = run_extract(utts, out, cfg)
    if res.finalised:
        click.echo(res.summary())
        if shard:
            k, n = shard
            click.echo(f"shard {k} of {n} done; when all {n} are, join them with: toucan-speakemb merge "
                       f"{res.output.with_name(res.output.name.replace(f'shard-{k}-of-{n}', f'shard-*-of-{n}'))} "
                       f"-o {out}")


@click.command(context_settings={"max_content_width": 100})
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The joined embedding set (.safetensors or .npz); the joined rejects file goes beside it. "
                   "Its folder must exist; existing outputs are replaced only with --overwrite.")
@click.option("--speaker-means", is_flag=True, help="Also write one mean embedding per speaker.")
@click.option("--allow-partial", is_flag=True, help="Merge shards even when some of the N are missing.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
def merge(inputs, out, speaker_means, allow_partial, overwrite):
    """Join embedding sets of one profile into one, e.g. the shards of an `extract --shard K/N` job array.

    Shards of one extraction are put back into corpus order (the result equals a one-job run) and all N must
    be present; other sets are concatenated in the order given. Utterance ids must not repeat. The rejects
    files beside the inputs are joined into OUT's.

    \b
    Example:
      toucan-speakemb merge emb.shard-*-of-8.safetensors -o emb.safetensors --speaker-means
    """
    from toucan_speakemb.extract.pipeline import merge as run_merge

    check_outputs(out, overwrite, speaker_means)
    res = run_merge(list(inputs), out, speaker_means=speaker_means, overwrite=overwrite, allow_partial=allow_partial)
    click.echo(res.summary())


def check_outputs(out: Path, overwrite: bool, speaker_means: bool) -> None:
    """The embedding set, its rejects file and (on request) its speaker means: checked before any work."""
    from toucan_speakemb.core.fileio import check_output
    from toucan_speakemb.extract.pipeline import rejects_path, speaker_means_path

    companions = [rejects_path(out)] + ([speaker_means_path(out)] if speaker_means else [])
    check_output(out, (".safetensors", ".npz"), overwrite=overwrite, option="-o", what="an embedding set",
                 companions=companions)


def register(group: click.Group) -> None:
    """Add ``extract`` and ``merge`` to the ``toucan-speakemb`` command group."""
    group.add_command(extract)
    group.add_command(merge)

"""CLI command ``evaluate``: a publishable report on generated voices against held-out real speakers."""

from __future__ import annotations

from pathlib import Path

import click

from toucan_speakemb.core.errors import SpeakEmbError


def _split_named(value: str):
    """``NAME=PATH`` or ``PATH`` (named after the file)."""
    if "=" in value and not Path(value).exists():
        name, path = value.split("=", 1)
        if not name or not path:
            raise SpeakEmbError(f"--generated {value!r}: expected PATH or NAME=PATH")
        return name, path
    return None, value


@click.command(context_settings={"show_default": True})
@click.option("--real", "real", required=True, metavar="SET",
              help="Real embeddings of speakers the generator never saw (embedding set or interchange .npz).")
@click.option("--train", "train", metavar="SET",
              help="The generator's training embeddings. Needed for novelty, the real-vs-real floor and the "
                   "baselines. Default: train_speakers.safetensors of --run, if given.")
@click.option("--generated", "generated", required=True, multiple=True, metavar="[NAME=]BANK",
              help="Generated voices: a voice bank, an embedding set, an .npz or a bare (N, d) .npy array. "
                   "Repeat to compare several generators (e.g. Toucan's GAN) in one report.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Report folder: report.md, report.html, metrics.json and the plots. Made if missing (its "
                   "parent must exist); a report already there is replaced only with --overwrite.")
@click.option("--run", "run", type=click.Path(file_okay=False, exists=True), metavar="RUN_DIR",
              help="The generator's run folder: adds its loss curve (and its training speakers if --train is "
                   "not given).")
@click.option("--level", type=click.Choice(["speaker", "utterance"]), default="speaker",
              help="Compare with real speaker means (for generators of voices) or with real utterances (for "
                   "utterance-level generators such as the source's baseline).")
@click.option("--baselines", default="gaussian,gmm,kde,interpolation,resample",
              help="Baselines fitted to the training set, comma-separated (gaussian, gmm, kde, interpolation, "
                   "resample), or 'none'. Those with a novelty knob are also shown where they are as novel as "
                   "the held-out speakers.")
@click.option("-k", "k", type=click.IntRange(min=1), default=5, help="Neighbours of the k-NN measures.")
@click.option("--threshold", type=click.FloatRange(-1, 1), default=None,
              help="Same-speaker cosine threshold. Default: the equal-error point on the real utterances.")
@click.option("--profile", default=None,
              help="Profile of interchange .npz inputs (default: guessed from width): a known profile, "
                   "synthetic-<dim> or custom-<name>.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0,
              help="Seed of baselines, subsamples and t-SNE (same seed, same report).")
@click.option("--no-tsne", is_flag=True, help="Skip the t-SNE plot (the slowest part on large sets).")
@click.option("--overwrite", is_flag=True, help="Replace a report already in --out.")
def evaluate(real, train, generated, out, run, level, baselines, k, threshold, profile, seed, no_tsne, overwrite):
    """Judge generated voices against real held-out speakers: are they realistic, new and distinct?

    Writes report.md, a self-contained report.html, metrics.json and PNG plots (t-SNE, PCA, novelty and
    distinctness histograms, per-dimension variance ratios, the loss curve with --run). Every figure is
    printed beside what real speakers score, and beside baselines (Gaussian fit, Gaussian mixture, kernel
    density, interpolation of neighbours, resampled training vectors), each with a novelty knob also shown
    where it is as novel as the held-out speakers; with --run, the run's generator is traced across its
    sampling temperature on the precision-against-novelty plot too.

    \b
    Example:
      toucan-speakemb evaluate --real heldout.safetensors --train train.safetensors \\
          --generated voices.safetensors --run runs/default --out report/
    """
    from toucan_speakemb.core.fileio import check_output_folder
    from toucan_speakemb.core.profiles import check_profile_name
    from toucan_speakemb.evaluation.report import REPORT_FILES
    from toucan_speakemb.evaluation.report import evaluate as run_evaluation
    from toucan_speakemb.evaluation.report import write_report
    from toucan_speakemb.voices.bank import load_generated
    from toucan_speakemb.training.trainer import load_training_set

    if profile is not None:
        check_profile_name(profile)
    check_output_folder(out, REPORT_FILES, overwrite=overwrite)
    chosen = [] if baselines.strip().lower() == "none" else [b.strip() for b in baselines.split(",") if b.strip()]
    real_set = load_training_set(real, profile=profile)
    if train is None and run is not None:
        candidate = Path(run) / "train_speakers.safetensors"
        if not candidate.exists():
            raise SpeakEmbError(f"--run {run} has no train_speakers.safetensors; give --train")
        train = str(candidate)
    train_set = load_training_set(train, profile=profile) if train else None
    gens = []
    for value in generated:
        name, path = _split_named(value)
        gens.append(load_generated(path, name))
    knob_systems = None
    if run is not None and (Path(run) / "generator.safetensors").exists() and train_set is not None:
        from toucan_speakemb.generate.generator import Generator

        gen = Generator.load(run)  # traced across its temperature on the precision-novelty curve
        knob_systems = {f"generator of {Path(run).name}": gen.temperature_knob(seed)}
    ev = run_evaluation(real_set, gens, train_set, level=level, k=k, baselines=chosen, seed=seed,
                        threshold=threshold, knob_systems=knob_systems)
    report = write_report(ev, out, run_dir=run, tsne=not no_tsne)
    click.echo(f"report: {report} (also report.html, metrics.json)")
    for name, row in ev.rows.items():
        if row.get("kind") == "generated":
            parts = [f"{key} {row[key]:.2f}" for key in ("precision", "recall", "frechet_ratio", "memorised",
                                                          "close_pairs") if key in row]
            click.echo(f"  {name}: " + ", ".join(parts))

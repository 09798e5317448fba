"""CLI commands that make and use generators: ``train``, ``sample`` and ``demo``."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from toucan_speakemb.diffusion.samplers import SAMPLERS, sampler_names

from toucan_speakemb.core.distributed import DEVICE_HELP
from toucan_speakemb.core.errors import SpeakEmbError
from toucan_speakemb.cli.options import device_option

log = logging.getLogger("toucan_speakemb.cli.main")


@click.command(context_settings={"show_default": True})
@click.option("--data", "data", metavar="SET",
              help="Training embeddings: an embedding set (.safetensors), an interchange .npz, or "
                   "'builtin:synthetic' (embedded data of known structure). Default: data.path of the config.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), metavar="RUN_DIR",
              help="Run folder (made with any missing parent folders): config, log, checkpoints, loss plot and "
                   "the finished generator. Re-running the same command resumes from the newest checkpoint.")
@click.option("--config", "config", type=click.Path(dir_okay=False), metavar="YAML",
              help="Recipe YAML (e.g. recipes/default/hparams.yaml). Keys not given keep the defaults.")
@click.option("--profile", default=None,
              help="Profile of an interchange .npz (default: guessed from its width): a known profile, "
                   "synthetic-<dim> or custom-<name>.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
def train(data, out, config, profile, no_progress, overrides):
    """Train a diffusion generator of speaker embeddings.

    OVERRIDES set single config keys, e.g. train.steps=2000 data.level=utterance seed=3.

    \b
    Levels (data.level):
      speaker    one vector per training speaker (its mean): learns voices, not recordings (default)
      balanced   utterances drawn so that every speaker weighs the same
      utterance  every utterance once (the source presentation's setting)

    Training uses one CPU thread (train.threads=1), torch's and numpy's: these small networks gain little from
    more, and jobs sharing a machine then do not slow each other down (with a thread per core, two trainings
    on two cores ran several times slower). train.threads=N uses N; on a GPU it still sets the CPU work (the
    Gaussian fit, the validation judgements).

    train.device=DEVICE. {device_help} The run's log and summary.json say which device was used; the
    generator file holds CPU tensors, so it loads on any machine.
    """
    from toucan_speakemb.core.distributed import resolve_device
    from toucan_speakemb.core.profiles import check_profile_name
    from toucan_speakemb.training.config import TrainConfig, apply_overrides
    from toucan_speakemb.training.trainer import load_training_set
    from toucan_speakemb.training.trainer import train as run_training

    if profile is not None:
        check_profile_name(profile)
    cfg = TrainConfig.from_yaml(config, overrides) if config else TrainConfig.from_dict(
        apply_overrides({}, overrides), "overrides")
    device = resolve_device(cfg.train.device, "train.device")  # before the data is read
    source = data or cfg.data.path
    if not source:
        raise SpeakEmbError("no training data: give --data SET (or data.path in the config)")
    es = load_training_set(source, profile=profile)
    click.echo(f"training on {es.summary()} ({cfg.data.level} level, device {device}) -> {out}")
    path = run_training(es, out, cfg, progress=not no_progress,
                        data_name=source if str(source).startswith("builtin:") else str(Path(source).resolve()))
    if path.exists():
        click.echo(f"generator written: {path}")


train.help = train.help.replace("{device_help}", DEVICE_HELP)  # the same text as every --device option


def condition_options(command):
    """The options of conditional sampling, shared by `sample`, `synth` and `voices add`."""
    options = [
        click.option("--gender", default=None, help="Conditional generators: voices of this gender (f / m)."),
        click.option("--age", default=None,
                     help="Conditional generators: an age band (e.g. 25-34) or an age in years."),
        click.option("--accent", default=None,
                     help="Conditional generators: voices of this accent (as in the training data)."),
        click.option("--condition", "extra_conditions", multiple=True, metavar="NAME=VALUE",
                     help="Conditional generators: any other trained attribute (a label column), e.g. pitch=up."),
        click.option("--guidance", type=click.FloatRange(min=0), default=None,
                     help="Classifier-free guidance of conditional sampling: 0 = unconditional, 1 = plain "
                          "conditional, >1 = stronger. Default: the generator's sample.guidance (1.5)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def slider_options(command):
    """The slider options, shared by `sample`, `synth` and `voices add`."""
    options = [
        click.option("--slider", "sliders", multiple=True, metavar="NAME=VALUE",
                     help="Edit the voices, staying on the data manifold: pcK=SD (K-th principal direction, in "
                          "standard deviations), eigK=DEGREES (rotation towards the K-th eigenvector), "
                          "ATTR:VALUE=AMOUNT (e.g. gender:f=1: 1 = the mean difference between groups), "
                          "ATTR=AMOUNT for a two-valued attribute. Repeatable."),
        click.option("--slider-method", type=click.Choice(["latent", "renoise"]), default=None,
                     help="How sliders stay on the data manifold. latent: move the voice's noise and decode it "
                          "again, so the edited voice is a sample of the model; renoise: move the voice, re-noise "
                          "it part of the way and denoise. Default: the generator's sample.slider_method (latent)."),
        click.option("--slider-strength", type=click.FloatRange(0, 1, min_open=True), default=None,
                     help="Renoise sliders: re-noise to this fraction of the diffusion steps before denoising "
                          "(default: the generator's sample.slider_strength, 0.3). Higher: closer to the "
                          "manifold, less of the edit."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def conditions_from(gender, age, accent, extra_conditions):
    conditions = {"gender": gender, "age": age, "accent": accent}
    conditions.update(parse_sliders_like(extra_conditions))
    return conditions


def request_from(gender, age, accent, extra_conditions, guidance, sliders, slider_method, slider_strength,
                 **more):
    """The SamplingRequest of the condition and slider options (``more``: sampler, steps, temperature)."""
    from toucan_speakemb.generate.request import SamplingRequest
    from toucan_speakemb.generate.sliders import parse_sliders

    return SamplingRequest.of(conditions=conditions_from(gender, age, accent, extra_conditions), guidance=guidance,
                              sliders=parse_sliders(sliders), slider_method=slider_method,
                              slider_strength=slider_strength, **more)


@click.command(context_settings={"show_default": True})
@click.option("--generator", "generator", required=True, type=click.Path(), metavar="RUN_DIR",
              help="A run folder from `train` (or its generator.safetensors).")
@click.option("-n", "n", type=click.IntRange(min=1), default=100,
              help="Number of voices (at most 1,000,000 per bank; checked against memory and disk first).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0,
              help="Bank seed: the same seed gives the same voices.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), metavar="BANK",
              help="Voice bank to write (.safetensors): ids, seeds, embeddings, provenance. Its folder must "
                   "exist; an existing file is replaced only with --overwrite.")
@click.option("--npy", "npy", type=click.Path(dir_okay=False), help="Also write the bare (N, d) float32 array (.npy).")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@click.option("--sampler", type=click.Choice(sampler_names()), default=None,
              help="; ".join(f"{s.name}: {s.help}" for s in SAMPLERS.values()) + ". Default: the generator's.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="DDIM steps (default: the generator's).")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Scale of the initial noise: below 1, voices nearer the population's typical ones (more "
                   "precise, less varied); above 1, more varied. Default: the one stored with the generator, chosen "
                   "at training time on its validation speakers (the best balance of precision and recall "
                   "against them, among the temperatures whose voices are at least as novel as real new "
                   "speakers and at most 0.0025 more in median cosine to the nearest training speaker; real new "
                   "speakers: the validation speakers and each training speaker left out; see summary.json). The "
                   "directions the network does not model sample at the generator's rest ratio x this "
                   "(sample.rest_temperature, 0.7 by default); the ones it models at a factor each x this, "
                   "stored with the chosen temperature, that moves their voices' variance part of the way to the "
                   "training speakers' (sample.variance_correction: 0.5 by default, halfway in log-variance; "
                   "with the deterministic sampler, which only the initial noise drives).")
@click.option("--no-progress", is_flag=True, help="No progress bar (shown for more than 4096 voices).")
@device_option
@condition_options
@slider_options
def sample(generator, n, seed, out, npy, overwrite, sampler, steps, temperature, no_progress, device, gender, age,
           accent, extra_conditions, guidance, sliders, slider_method, slider_strength):
    """Sample new voices from a trained generator into a voice bank.

    The voices are sampled in chunks and streamed to disk, so memory holds one chunk (and the ids), and the
    files appear complete or not at all.

    \b
    Conditional generators (trained with model.conditions) take --gender, --age, --accent or --condition;
    sliders (--slider) work on any generator; see docs/attribute-control.md.
    """
    from toucan_speakemb.core.distributed import resolve_device
    from toucan_speakemb.core.fileio import check_output
    from toucan_speakemb.generate.generator import Generator
    from toucan_speakemb.voices.bank import MAX_BANK_VOICES, SamplingPlan, check_sample_request

    request = request_from(gender, age, accent, extra_conditions, guidance, sliders, slider_method, slider_strength,
                           sampler=sampler, steps=steps, temperature=temperature)
    if n > MAX_BANK_VOICES:  # before loading anything
        check_sample_request(n, 1, out)
    # fail before anything is written, so nothing is half-replaced
    check_output(out, (".safetensors",), overwrite=overwrite, what="a voice bank")
    if npy:
        check_output(npy, (".npy",), overwrite=overwrite, option="--npy", what="the bare array")
        if Path(npy).resolve() == Path(out).resolve():
            raise SpeakEmbError("--npy and --out name the same file")
    device = resolve_device(device, "--device")
    gen = Generator.load(generator, device)
    check_sample_request(n, gen.dim, out, npy)
    plan = SamplingPlan(gen, n, seed, request)
    prov = plan.provenance
    if "conditions" in prov:
        click.echo("conditions: " + ", ".join(f"{k}={v}" for k, v in prov["conditions"].items())
                   + f" (guidance {prov['guidance']:g})")
    plan.write(out, npy, progress=not no_progress)
    click.echo(f"{n} voices ({gen.profile.name}, {gen.dim}-dim, sampled on {device}) written to {out}")
    if npy:
        click.echo(f"array written to {npy}")


def parse_sliders_like(items):
    """``--condition NAME=VALUE`` items -> {name: value}."""
    out = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name.strip() or not value.strip():
            raise SpeakEmbError(f"bad --condition '{item}': expected NAME=VALUE, e.g. pitch=up")
        out[name.strip()] = value.strip()
    return out


@click.command(context_settings={"show_default": True})
@click.option("--out", "out", default="demo_out", type=click.Path(file_okay=False),
              help="Output folder (made with any missing parent folders).")
@click.option("--steps", type=click.IntRange(min=10), default=None,
              help="Training steps (default: the default recipe's, train.steps).")
@click.option("--voices", type=click.IntRange(min=20), default=500, help="Voices to sample.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0,
              help="Seed of training and sampling (same seed, same report).")
@click.option("--toucan-dir", type=click.Path(), default=None,
              help="Hear voices instead: an IMS-Toucan checkout; trains a small generator on stand-in speakers "
                   "around the Toucan model's default embedding (NOT a real speaker distribution) and writes wavs.")
@click.option("--tts-model", type=click.Path(), metavar="PATH", help="With --toucan-dir: the Toucan TTS checkpoint "
              "(default: where the release's downloader puts it).")
@click.option("--vocoder", type=click.Path(), metavar="PATH", help="With --toucan-dir: the vocoder checkpoint.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def demo(out, steps, voices, seed, toucan_dir, tts_model, vocoder, no_progress):
    """Train a small generator on embedded data of known structure, sample voices, write a report.

    Needs no download. The report compares the generated voices with fresh speakers drawn from the true
    distribution and with a Gaussian fit, on the measures of `benchmarks/bench_generation.py`. It computes on
    one CPU thread (torch's and numpy's), so that it stays fast beside another job on a small machine.

    With --toucan-dir: hear voices without a corpus. A small generator is trained in the Toucan model's own
    space on stand-in speakers placed around its default embedding (not a real speaker distribution), and two
    sentences are spoken in three new voices each into OUT/wavs (with sidecars).
    """
    from toucan_speakemb.demo import run_demo

    if toucan_dir:
        from toucan_speakemb.adapters import ToucanModels
        from toucan_speakemb.adapters.first_voices import NOT_REAL, hear_voices

        cars = hear_voices(ToucanModels(toucan_dir, tts_model, vocoder), Path(out), steps=steps or 300, seed=seed,
                           progress=not no_progress)
        click.echo(f"{len(cars)} wavs in {Path(out) / 'wavs'}; the generator was trained on {NOT_REAL}")
        return
    report = run_demo(Path(out), steps=steps, n_voices=voices, seed=seed, progress=not no_progress)
    click.echo(f"report: {report}")

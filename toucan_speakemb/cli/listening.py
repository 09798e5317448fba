"""``export-listening-test`` and ``listening-results``: listening tests of generated voices."""

from __future__ import annotations

import click

from toucan_speakemb.listening.design import KINDS, MAX_SEED
from toucan_speakemb.listening.stimuli import DEFAULT_VOICE_PATTERN


@click.command("export-listening-test")
@click.option("--audio", "audio_dir", required=True, type=click.Path(path_type=str),
              help="Folder of audio to test. Each sub-folder is a system (generated/, baseline_gaussian/, ...); "
                   "files directly in it form one system named after the folder. A metadata.csv (file, "
                   "system, voice_id, text) or x.json sidecars may name systems and voices.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=str),
              help="Output folder, made if missing (its parent must exist). A test already there is replaced "
                   "(its old audio removed) only with --overwrite.")
@click.option("--kind", type=click.Choice(KINDS), default="mos", show_default=True,
              help="mos: naturalness 1-5 per stimulus; mushra: each item's systems rated 0-100 against a real "
                   "reference (needs --reference); ab-speaker: 'same or different speaker?' for pairs.")
@click.option("--reference", "reference_dir", type=click.Path(path_type=str), default=None,
              help="Real speakers' recordings, added as the system 'reference': an upper anchor in mos, the "
                   "reference in mushra, same/different anchors and novelty pairs in ab-speaker.")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True,
              help="Seed of the trial selection and of every listener's order (which also depends on the name "
                   "the listener enters).")
@click.option("--title", default=None, help="Title shown to listeners.")
@click.option("--embed/--no-embed", default=None,
              help="Put the audio inside the page (one file to send) or next to it in audio/ (send the folder). "
                   "Default: embed up to 40 MB of audio.")
@click.option("--sample-rate", type=int, default=None,
              help="Rate all stimuli are played at; other files are resampled (and listed). Default: the most "
                   "common rate among the files, of tied ones the highest (upsampling loses nothing).")
@click.option("--max-per-system", type=int, default=None,
              help="Use at most this many stimuli (mos) or items (mushra) per system, chosen with the seed.")
@click.option("--pairs-per-type", type=int, default=8, show_default=True,
              help="ab-speaker: pairs per system and pair type (same voice / different voices / vs reference).")
@click.option("--voice-pattern", default=DEFAULT_VOICE_PATTERN, show_default=True,
              help="Regular expression taking the voice from a file name when no sidecar, metadata.csv or "
                   "<system>/<voice>/ folder gives it (group 'voice', or the first group).")
@click.option("--no-webmushra", is_flag=True, help="Do not write the webMUSHRA configuration.")
@click.option("--overwrite", is_flag=True, help="Replace a test already in --out.")
def export_listening_test_cmd(audio_dir, out_dir, kind, reference_dir, seed, title, embed, sample_rate,
                              max_per_system, pairs_per_type, voice_pattern, no_webmushra, overwrite):
    """Write a listening test: a web page listeners open in a browser, and a webMUSHRA configuration.

    \b
    OUT/listening_test.html   self-contained page (no network, no server): listeners enter a name, hear
                              the stimuli in an order seeded by the test seed and their name, rate them,
                              and download their answers as JSON and CSV; incomplete answers are refused
    OUT/test.json, stimuli.csv   the test: id, trials, stimuli with their system, voice and source file
    OUT/audio/                every stimulus as played: mono 16-bit wav at one sample rate
    OUT/webmushra/            configs/<test id>.yaml and configs/resources/audio/... to copy into webMUSHRA

    \b
    A stimulus is <system>/<file name without extension>. Refused with one line: a missing or empty
    folder, unreadable audio files, two files with one name in a system, a system called 'reference'.
    Files at another sample rate are resampled for the test and listed.
    Summarise the answers with:  toucan-speakemb listening-results answers_*.json --test OUT
    """
    from toucan_speakemb.core.fileio import check_output_folder
    from toucan_speakemb.listening.export import PAGE_NAME, export_listening_test

    check_output_folder(out_dir, ("test.json", PAGE_NAME, "stimuli.csv"), overwrite=overwrite)
    t = export_listening_test(audio_dir, out_dir, kind=kind, reference_dir=reference_dir, seed=seed, title=title,
                              embed=embed, sample_rate=sample_rate, max_per_system=max_per_system,
                              pairs_per_type=pairs_per_type, voice_pattern=voice_pattern, webmushra=not no_webmushra)
    click.echo(f"test {t.test_id}: {t.kind}, {t.n_trials} trials of {t.n_stimuli} stimuli at {t.sample_rate} Hz")
    click.echo(f"page: {t.page} ({'audio embedded: send this one file' if t.embedded else 'send the whole folder'})")
    if not no_webmushra:
        click.echo(f"webMUSHRA: {t.out / 'webmushra' / 'configs' / (t.test_id + '.yaml')}")


@click.command("listening-results")
@click.argument("answers", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--test", "test", type=click.Path(path_type=str), default=None,
              help="The exported test folder (or its test.json): answers from another test, or that leave a "
                   "trial unanswered, are refused; systems, pairs and truths are taken from it.")
@click.option("--out", "out_dir", type=click.Path(path_type=str), default=None,
              help="Also write results.json and results.png (the plot) into this folder, made if missing "
                   "(its parent must exist); results already there are replaced only with --overwrite.")
@click.option("--overwrite", is_flag=True, help="Replace results already in --out.")
def listening_results_cmd(answers, test, out_dir, overwrite):
    """Summarise answers files downloaded from a listening test page (JSON or CSV), or webMUSHRA's result
    CSVs (results/<test id>/lss.csv, mushra.csv; these need --test).

    \b
    mos / mushra: mean rating per system with a 95% t-interval, number of ratings and listeners.
    ab-speaker:   share answered correctly per system and pair type (same voice, different voices,
                  vs reference) with a 95% Wilson interval.
    All files must come from one test; a session given twice (its JSON and its CSV) counts once.
    """
    from toucan_speakemb.core.fileio import check_output_folder
    from toucan_speakemb.listening.results import format_table, listening_results

    if out_dir:
        check_output_folder(out_dir, ("results.json", "results.png"), overwrite=overwrite)
    summary = listening_results(list(answers), test=test, out=out_dir)
    click.echo(format_table(summary), nl=False)
    if out_dir:
        click.echo(f"wrote {out_dir}/results.json and {out_dir}/results.png")


def register(group: click.Group) -> None:
    group.add_command(export_listening_test_cmd)
    group.add_command(listening_results_cmd)

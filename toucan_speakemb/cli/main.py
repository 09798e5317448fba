"""The ``toucan-speakemb`` command: a thin click layer over the Python API.

Every command turns a :class:`SpeakEmbError` (bad input the user can fix) into one line on stderr and exit
code 1; click's own usage errors exit with 2.
"""

from __future__ import annotations

import logging
import sys

import click

from toucan_speakemb.core.version import __version__
from toucan_speakemb.core.errors import SpeakEmbError


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SpeakEmbError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except OSError as e:  # unwritable output, a file where a folder should be, a full disk
            where = f": {e.filename}" if getattr(e, "filename", None) else ""
            click.echo(f"error: {e.strerror or e}{where}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted; files already written are complete (atomic writes)", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="toucan-speakemb")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def main(verbose: int, quiet: bool):
    """New voices for IMS Toucan: learn the distribution of speaker embeddings in the exact space a Toucan
    model is conditioned on, and sample voices that belong to no real speaker.

    \b
    Typical flow:
      toucan-speakemb train  --data set.safetensors --out runs/default
      toucan-speakemb sample --generator runs/default -n 100 --seed 0 --out voices.safetensors
    Try everything without data:  toucan-speakemb demo --out demo_out
    """
    _set_log_level(verbose, quiet)


def _set_log_level(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger().setLevel(level)
    for handler in logging.getLogger().handlers:  # the run's log file may lower a logger's level; not the console's
        handler.setLevel(level)


def _log_option_callback(ctx, param, value):
    """-v / -q given after a sub-command: the same as before it (the later word wins)."""
    if value:
        _set_log_level(value if param.name == "verbose" else 0, param.name == "quiet")


def _logging_options_everywhere(command: click.Command) -> None:
    """Every (sub-)command also takes -v / -q, so they work anywhere on the command line."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _logging_options_everywhere(sub)
        if command is main:
            return
    taken = {o for p in command.params for o in getattr(p, "opts", [])}
    if not taken & {"-v", "--verbose"}:
        command.params.append(click.Option(["-v", "--verbose"], count=True, expose_value=False, is_eager=True,
                                           show_default=False, callback=_log_option_callback,
                                           help="More log output (-vv for debug)."))
    if not taken & {"-q", "--quiet"}:
        command.params.append(click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, is_eager=True,
                                           show_default=False, callback=_log_option_callback,
                                           help="Only warnings and errors."))


@main.command()
@click.option("--repair-torchaudio", is_flag=True,
              help="If torchaudio's compiled extension cannot load beside this torch (a CPU torch with "
                   "PyPI's CUDA-built torchaudio), disable it so torchaudio imports as pure Python.")
@click.option("--undo", is_flag=True, help="With --repair-torchaudio: put the extension files back.")
def doctor(repair_torchaudio: bool, undo: bool):
    """Check the environment (torch, torchaudio, SpeechBrain) and optionally repair torchaudio."""
    from toucan_speakemb.cli import doctor as d

    if repair_torchaudio:
        msg, _ = d.repair_torchaudio(undo=undo)
        click.echo(msg)
        if msg.startswith("torchaudio still fails"):
            sys.exit(1)
        return
    bad = False
    for name, ver in d.report():
        click.echo(f"{name:12s} {ver}")
        bad |= ver.startswith("FAILS")
    sys.exit(1 if bad else 0)


# Commands defined in other modules are registered here, one line each.
from toucan_speakemb.cli.generate import demo, sample, train  # noqa: E402

main.add_command(train)
main.add_command(sample)
main.add_command(demo)
from toucan_speakemb.cli import extract as cli_extract  # noqa: E402
cli_extract.register(main)
from toucan_speakemb.cli.evaluate import evaluate  # noqa: E402

main.add_command(evaluate)
from toucan_speakemb.cli import listening as cli_listening  # noqa: E402
cli_listening.register(main)
from toucan_speakemb.cli import synth as cli_synth  # noqa: E402
cli_synth.register(main)

_logging_options_everywhere(main)

if __name__ == "__main__":
    main()

"""Options several commands share, written once so that they read and behave the same everywhere."""

from __future__ import annotations

import click

from toucan_speakemb.core.distributed import DEVICE_HELP, check_device_name


def _check_device(ctx, param, value):
    # the name is checked while the command line is read, before any work (SpeakEmbError: one line, exit 1);
    # whether this torch sees the CUDA device asked for is checked by resolve_device when the command starts
    return check_device_name(value, "--device")


def device_option(command):
    """``--device``: where torch runs (extract, sample, voices add, synth); default auto."""
    return click.option("--device", default="auto", show_default=True, metavar="DEVICE", callback=_check_device,
                        help=DEVICE_HELP)(command)

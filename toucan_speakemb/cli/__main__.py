"""``python -m toucan_speakemb.cli``: the same as the ``toucan-speakemb`` command."""

from toucan_speakemb.cli.main import main

main()

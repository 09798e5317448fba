"""Running a recipe folder: its YAML holds every hyperparameter, its short script calls :func:`run_recipe`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Sequence


def run_recipe(hparams: Path, argv: Optional[Sequence[str]] = None) -> None:
    """``train`` with the recipe's YAML; ``--out`` defaults to ``runs/<recipe>/<yaml name>``.

    Any other argument is passed on: ``--data SET``, ``--no-progress``, ``key=value`` overrides.
    """
    from toucan_speakemb.cli.main import main

    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    if "--out" not in args:
        args += ["--out", str(Path("runs") / hparams.parent.name / hparams.stem)]
    main(["train", "--config", str(hparams), *args], standalone_mode=True)

"""The source presentation's baseline, one run per variance schedule (linear, quadratic, sigmoid, cosine).

    python recipes/source_baseline/train.py [--data SET] [--only SCHEDULE] [key=value ...]

Each run goes to runs/source_baseline/<schedule>/ unless --out is given (then only with --only).
"""
import sys
from pathlib import Path

from toucan_speakemb.cli.recipe import run_recipe

SCHEDULES = ("linear", "quadratic", "sigmoid", "cosine")

if __name__ == "__main__":
    args = sys.argv[1:]
    only = None
    if "--only" in args:
        i = args.index("--only")
        only = args[i + 1] if i + 1 < len(args) else None
        del args[i:i + 2]
        if only not in SCHEDULES:
            sys.exit(f"error: --only takes one of {', '.join(SCHEDULES)}")
    if "--out" in args and only is None:
        sys.exit("error: --out names one run folder; give --only SCHEDULE with it")
    here = Path(__file__).parent
    for schedule in [only] if only else SCHEDULES:
        try:
            run_recipe(here / f"{schedule}.yaml", args)
        except SystemExit as e:
            if e.code:
                raise

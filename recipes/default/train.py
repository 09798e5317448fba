"""The default recipe: residual-MLP DDPM on speaker means.

    python recipes/default/train.py [--data SET] [--out RUN_DIR] [key=value ...]

Without --data it trains on the embedded data of known structure (builtin:synthetic).
"""
from pathlib import Path

from toucan_speakemb.cli.recipe import run_recipe

if __name__ == "__main__":
    run_recipe(Path(__file__).with_name("hparams.yaml"))

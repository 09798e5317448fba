"""The ``toucan-speakemb`` command: thin click layers that parse, call the Python API and print; recipes
run through :func:`toucan_speakemb.cli.recipe.run_recipe`.
"""

from toucan_speakemb.cli.main import main

__all__ = ["main"]

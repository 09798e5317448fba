"""Stage 2, embedding set -> generator run: the recipe's configuration, attribute conditions, and the
training loop with model selection, checkpoints and the run folder.
"""

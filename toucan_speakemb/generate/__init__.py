"""Stage 3, generator run -> new embeddings: the trained generator (sampling, guidance, inversion) and the
sliders that edit its voices.
"""

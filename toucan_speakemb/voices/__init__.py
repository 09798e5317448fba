"""Stage 4, new embeddings -> named voices: the voice bank file and the novelty / distinctness checks that
decide which sampled voices are accepted.
"""

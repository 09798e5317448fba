"""Stage 1, speech corpus -> embedding set: audio reading and Toucan's preprocessing, corpus layouts, the
speaker encoders of each profile, and the resumable, sharded extraction pipeline.
"""

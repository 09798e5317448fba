"""Evaluation of generated speaker embeddings (array-only metrics in :mod:`.metrics`)."""

from .metrics import (
    DEFAULT_CHUNK_SIZE,
    close_pair_share,
    constraint_share,
    cosine_similarity_matrix_max,
    density_coverage,
    eer_threshold,
    effective_voice_count,
    frechet_distance,
    frechet_distance_from_stats,
    knn_radii,
    mean_variance_differences,
    memorised_share,
    precision_recall,
    same_speaker_threshold,
    split_half_threshold,
    total_variance_ratio,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "close_pair_share",
    "constraint_share",
    "cosine_similarity_matrix_max",
    "density_coverage",
    "eer_threshold",
    "effective_voice_count",
    "frechet_distance",
    "frechet_distance_from_stats",
    "knn_radii",
    "mean_variance_differences",
    "memorised_share",
    "precision_recall",
    "same_speaker_threshold",
    "split_half_threshold",
    "total_variance_ratio",
]

"""kmeans and pca: the unsupervised model types (every selected column is a feature).

kmeans: num_clusters (default 4 here; BigQuery picks one from the row count), distance_type
EUCLIDEAN|COSINE, kmeans_init_method KMEANS++|RANDOM, max_iterations (default 20),
standardize_features (default TRUE). pca: num_principal_components (default: all),
scale_features (default TRUE).
"""

from __future__ import annotations

from inferline.models.trained import Centroids, Components
from inferline.sql.training.options import TrainOptions

DEFAULT_CLUSTERS = 4
DEFAULT_ITERATIONS = 20


def kmeans(options: TrainOptions) -> Centroids:
    return Centroids(
        n_clusters=int(options.get("num_clusters", DEFAULT_CLUSTERS)),
        distance_type=str(options.get("distance_type", "EUCLIDEAN")).lower(),
        init="random" if options.get("kmeans_init_method") == "RANDOM" else "k-means++",
        max_iter=int(options.get("max_iterations", DEFAULT_ITERATIONS)),
    )


def pca(options: TrainOptions) -> Components:
    return Components(n_components=options.get("num_principal_components"))

"""kmeans and pca: the unsupervised model types (every selected column is a feature).

kmeans: num_clusters (BigQuery's default from the training row count n: log10(n), rounded down,
between 2 and 100; see `default_clusters`), distance_type
EUCLIDEAN|COSINE, kmeans_init_method KMEANS++|RANDOM, max_iterations (default 20),
standardize_features (default TRUE). pca: num_principal_components (default: all),
scale_features (default TRUE).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from inferline.sql.training.options import TrainOptions

# models/trained.py imports scikit-learn (~1.5 s CPU): imported where used, so `inferline sql`
# runs that train nothing do not pay for it.
if TYPE_CHECKING:
    from inferline.models.trained import Centroids, Components

MIN_CLUSTERS, MAX_CLUSTERS = 2, 100  # BigQuery's range for num_clusters
DEFAULT_ITERATIONS = 20


def default_clusters(rows: int) -> int:
    """BigQuery's num_clusters when the option is left out: log10 of the training rows (it
    documents "a reasonable default based on the total number of rows in the training data"),
    kept in its 2..100 range.

    Example:
        >>> default_clusters(50), default_clusters(1_000), default_clusters(250_000)
        (2, 3, 5)
    """
    return max(MIN_CLUSTERS, min(MAX_CLUSTERS, int(math.log10(max(rows, 1)))))


def clusters(options: TrainOptions, rows: int) -> int:
    return int(options.get("num_clusters", default_clusters(rows)))


def kmeans(options: TrainOptions, rows: int) -> Centroids:
    from inferline.models.trained import Centroids

    return Centroids(
        n_clusters=clusters(options, rows),
        distance_type=str(options.get("distance_type", "EUCLIDEAN")).lower(),
        init="random" if options.get("kmeans_init_method") == "RANDOM" else "k-means++",
        max_iter=int(options.get("max_iterations", DEFAULT_ITERATIONS)),
    )


def pca(options: TrainOptions) -> Components:
    from inferline.models.trained import Components

    return Components(n_components=options.get("num_principal_components"))

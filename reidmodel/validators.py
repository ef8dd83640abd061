"""Label-free validators: signals of adaptation quality that read the model and the target *training* images only,
never their identities, so that a user with an unlabelled target can select hyperparameters and checkpoints.

Each is a small pure function on features, classifier logits or cluster labels (docs/method.md, "Label-free
validators", gives the formulas); ``model_validators`` and ``clustering_validators`` compute a cycle's set. They are
subsampled to a seeded, fixed set of images (``eval.validator_samples``) so that each costs a small fraction of a
cycle (results/benchmarks.md, "Label-free validators"), and they draw from their own seeded generators only, so
turning them on never changes training.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_mutual_info_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

SND_TEMPERATURE = 0.05  # Saito et al. 2021's temperature


def sample_indices(num: int, size: int, seed: int) -> np.ndarray:
    """``size`` of ``range(num)`` (all when size >= num), sorted, drawn by a generator of their own: the same
    images every cycle of a run, and no draw from the global RNGs that training uses."""
    if size >= num:
        return np.arange(num)
    return np.sort(np.random.default_rng(seed).choice(num, size, replace=False))


def soft_neighbourhood_density(features: torch.Tensor, temperature: float = SND_TEMPERATURE) -> float:
    """SND (Saito et al., "Tune it the right way: unsupervised validation of domain adaptation via soft
    neighborhood density", ICCV 2021): the mean entropy of each sample's softmax over its cosine similarities to
    the *other* samples divided by ``temperature``. Higher is better: dense neighbourhoods spread the softmax over
    many similar neighbours, scattered features concentrate it on one or two. Saito et al. feed the classifier's
    softmax output; re-ID retrieves by the feature, which is what is passed here."""
    unit = torch.nn.functional.normalize(torch.as_tensor(features, dtype=torch.float32), dim=1)
    similarity = unit @ unit.T / temperature
    similarity.fill_diagonal_(-torch.inf)  # a sample is not its own neighbour
    return float(torch.special.entr(similarity.softmax(dim=1)).sum(dim=1).mean())


def kmeans_clusters(features: torch.Tensor, num_clusters: int, seed: int) -> np.ndarray:
    """k-means (scikit-learn, one start from randomly chosen samples) cluster ids of the L2-normalised features: the
    independent clustering ClassAMI compares the classifier with. Not k-means++: its seeding alone takes minutes
    on CPU for hundreds of classes in 2048-d (results/benchmarks.md), a random start well under a second."""
    unit = torch.nn.functional.normalize(torch.as_tensor(features, dtype=torch.float32), dim=1).numpy()
    num_clusters = min(num_clusters, len(unit))
    return KMeans(num_clusters, init="random", n_init=1, random_state=seed).fit_predict(unit)


def class_ami(logits: torch.Tensor, clusters: np.ndarray) -> float:
    """ClassAMI (Musgrave, Belongie, Lim, "Three new validators and a large-scale benchmark ranking for
    unsupervised domain adaptation", 2022): the adjusted mutual information between the classifier's predictions
    (argmax) and an independent clustering of the same samples. Higher is better: the classifier's decision
    boundaries follow the structure of the features. 0 is chance, 1 the same partition."""
    predictions = torch.as_tensor(logits).argmax(dim=1).numpy()
    return float(adjusted_mutual_info_score(predictions, clusters))


def information_maximisation(logits: torch.Tensor) -> float:
    """IM (Shi and Sha 2012; Liang et al., SHOT, 2020; a validator in Musgrave et al. 2022): the entropy of the
    mean prediction (diversity) minus the mean entropy of the predictions (confidence). Between 0 (every sample
    predicted alike: a constant prediction) and log K (confident and balanced over the K classes); higher is
    better."""
    probabilities = torch.as_tensor(logits, dtype=torch.float64).softmax(dim=1)
    diversity = torch.special.entr(probabilities.mean(dim=0)).sum()
    confidence = torch.special.entr(probabilities).sum(dim=1).mean()
    return float(diversity - confidence)


def info_max_ratio(info_max: float, num_classes: int) -> float:
    """IM over its ceiling log K, in [0, 1]: IM grows with the classifier's class count K, so a search on IM
    drifts to large K (README, "Choosing without target labels"); the ratio compares models across K. NaN for
    K < 2, whose ceiling is 0."""
    return info_max / math.log(num_classes) if num_classes >= 2 else float("nan")


def batch_nuclear_norm(logits: torch.Tensor) -> float:
    """BNM (Cui et al., "Towards discriminability and diversity: batch nuclear-norm maximization under label
    insufficient situations", CVPR 2020; a validator in Musgrave et al. 2022): the nuclear norm of the [N, K]
    softmax matrix divided by N. Its minimum, sqrt(1 / (N K)), is a constant uniform prediction; confident and
    balanced predictions give sqrt(min(N, K) / N) at most. Higher is better."""
    probabilities = torch.as_tensor(logits, dtype=torch.float64).softmax(dim=1)
    return float(torch.linalg.svdvals(probabilities).sum() / len(probabilities))


def silhouette(distance_rows: np.ndarray, rows: np.ndarray, labels: np.ndarray) -> float:
    """The mean silhouette (Rousseeuw 1987) of the samples ``rows``, each against every labelled sample:
    ``distance_rows`` [len(rows), N] holds their distances to all N samples, ``labels`` [N] the cluster of each
    (noise already excluded). s = (b - a) / max(a, b), a the mean distance to the own cluster's other members, b
    the smallest mean distance to another cluster; 0 for a member of a singleton cluster. Over all rows it is
    scikit-learn's ``silhouette_score(metric="precomputed")``; over a sample of rows it estimates that without the
    N x N matrix. NaN with fewer than 2 clusters. Higher is better: compact, well separated clusters."""
    clusters, labels = np.unique(labels, return_inverse=True)
    if len(clusters) < 2:
        return float("nan")
    members = sp.csr_matrix((np.ones(len(labels), dtype=np.float32), (np.arange(len(labels)), labels)),
                            shape=(len(labels), len(clusters)))
    sizes = np.bincount(labels)
    sums = np.asarray(members.T @ np.asarray(distance_rows, dtype=np.float32).T, dtype=np.float64).T  # [rows, C]
    own = labels[rows]
    picked = np.arange(len(rows))
    within = sums[picked, own] / np.maximum(sizes[own] - 1, 1)  # the zero self distance is in the sum
    means = sums / sizes
    means[picked, own] = np.inf
    nearest = means.min(axis=1)
    scores = (nearest - within) / np.maximum(np.maximum(within, nearest), np.finfo(float).tiny)
    scores[sizes[own] == 1] = 0.0
    return float(scores.mean())


def noise_fraction(cluster_ids: np.ndarray) -> float:
    """The share of samples DBSCAN left as noise (cluster id -1). Lower means more of the target is clustered."""
    return float(np.mean(np.asarray(cluster_ids) < 0))


def pseudo_label_stability(previous: np.ndarray, current: np.ndarray) -> float:
    """The adjusted mutual information of two consecutive cycles' pseudo labels over the images labelled (>= 0) in
    both; 1 when the partition did not change. NaN with fewer than 2 such images. A run whose pseudo labels
    settle has found a structure it keeps refining; churning labels mean it has not."""
    both = (np.asarray(previous) >= 0) & (np.asarray(current) >= 0)
    if both.sum() < 2:
        return float("nan")
    return float(adjusted_mutual_info_score(previous[both], current[both]))


def domain_weights(source_features: torch.Tensor, target_features: torch.Tensor, seed: int) -> np.ndarray:
    """Importance weights p(target | x) / p(source | x) of the source samples, rescaled by the sample sizes so that
    they average 1 where the domains cannot be told apart. The probabilities come from a logistic regression
    (scikit-learn) on the L2-normalised features, each source sample scored by the fold that did not train on it
    (two folds), so that the classifier cannot simply remember it."""
    unit = torch.nn.functional.normalize(torch.cat([torch.as_tensor(source_features, dtype=torch.float32),
                                                    torch.as_tensor(target_features, dtype=torch.float32)]), dim=1)
    is_target = np.r_[np.zeros(len(source_features), int), np.ones(len(target_features), int)]
    folds = StratifiedKFold(2, shuffle=True, random_state=seed)
    probability = cross_val_predict(LogisticRegression(max_iter=1000), unit.numpy(), is_target, cv=folds,
                                    method="predict_proba")[: len(source_features), 1]
    probability = np.clip(probability, 1e-6, 1 - 1e-6)
    return probability / (1 - probability) * len(source_features) / len(target_features)


def deep_embedded_validation(losses: np.ndarray, weights: np.ndarray) -> float:
    """DEV (You et al., "Towards accurate model selection in deep unsupervised domain adaptation", ICML 2019; a
    validator in Musgrave et al. 2022): the importance-weighted mean of the source validation ``losses``, an
    unbiased estimate of the target risk, with the control variate eta that cancels the part of its variance the
    weights explain (the weights' own mean is 1 in expectation). Lower is better."""
    losses, weights = np.asarray(losses, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    weighted = weights * losses
    variance = weights.var(ddof=1) if len(weights) > 1 else 0.0
    eta = -np.cov(weighted, weights)[0, 1] / variance if variance > 0 else 0.0
    return float(weighted.mean() + eta * weights.mean() - eta)


def model_validators(features: torch.Tensor, logits: torch.Tensor, seed: int,
                     source_queries: tuple[torch.Tensor, np.ndarray] | None = None) -> dict[str, float]:
    """The validators of a model on (a sample of) the target training images: its features and the logits of the
    classifier it is trained with; with ``source_queries``, the source query features and each query's AP
    (NaN: skipped), DEV too. The source split holds out identities, not images of the training ones, so the
    classification loss DEV was defined with has nothing to score there: a query's retrieval loss, 1 - AP,
    stands in."""
    info_max = information_maximisation(logits)
    found = {
        "snd": soft_neighbourhood_density(features),
        "class_ami": class_ami(logits, kmeans_clusters(features, logits.shape[1], seed)),
        "info_max": info_max,
        "info_max_ratio": info_max_ratio(info_max, logits.shape[1]),
        "bnm": batch_nuclear_norm(logits),
    }
    if source_queries is not None:
        query_features, query_ap = source_queries
        ranked = np.flatnonzero(~np.isnan(query_ap))
        weights = domain_weights(torch.as_tensor(query_features)[torch.from_numpy(ranked)], features, seed)
        found["dev"] = deep_embedded_validation(1 - query_ap[ranked], weights)
    return found


def clustering_validators(
    cluster_ids: np.ndarray,
    distance_rows: Callable[[np.ndarray, np.ndarray], np.ndarray],
    pseudo_labels: np.ndarray,
    previous_labels: np.ndarray | None,
    *,
    samples: int,
    seed: int,
) -> dict[str, float]:
    """The validators of one ULA step: its DBSCAN cluster ids, ``distance_rows(rows, columns)`` (the distance it
    clustered with, as a dense block), its pseudo labels and the previous cycle's (None before the second ULA).
    The silhouette reads ``samples`` clustered rows against every clustered sample."""
    clustered = np.flatnonzero(cluster_ids >= 0)
    rows = sample_indices(len(clustered), samples, seed)
    no_previous = previous_labels is None or len(previous_labels) != len(pseudo_labels)
    return {
        "ula_silhouette": silhouette(distance_rows(clustered[rows], clustered), rows, cluster_ids[clustered])
        if len(clustered) else float("nan"),
        "ula_noise_fraction": noise_fraction(cluster_ids),
        "pseudo_label_stability": float("nan") if no_previous else pseudo_label_stability(previous_labels,
                                                                                          pseudo_labels),
    }


__all__ = [
    "SND_TEMPERATURE",
    "batch_nuclear_norm",
    "class_ami",
    "clustering_validators",
    "deep_embedded_validation",
    "domain_weights",
    "info_max_ratio",
    "information_maximisation",
    "kmeans_clusters",
    "model_validators",
    "noise_fraction",
    "pseudo_label_stability",
    "sample_indices",
    "silhouette",
    "soft_neighbourhood_density",
]

"""Unsupervised label adaptation (ULA, docs/method.md sections 5 and 8): pseudo labels for the target domain.

DBSCAN groups the target features; the K largest clusters become base classes whose mean
(L2-normalised) features are the identity templates; every other sample joins the template it is
most similar to when the cosine similarity clears a threshold. A clustering that collapses (one
giant cluster, no clusters, almost nothing labelled) is reported as degenerate in the diagnostics
so that the caller never fine-tunes on it unknowingly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.cluster import DBSCAN
from sklearn.metrics import normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix, pair_confusion_matrix
from sklearn.preprocessing import normalize

from reidmodel.config import ULAConfig
from reidmodel.evaluation import as_numpy, compute_distance_matrix
from reidmodel.rerank import jaccard_distance

logger = logging.getLogger(__name__)

UNLABELLED = -1


@dataclass
class ULAResult:
    pseudo_labels: np.ndarray  # int64 [N]; -1 = unlabelled, classes 0..K'-1 (largest base cluster first)
    templates: np.ndarray  # float32 [K', D], L2-normalised
    diagnostics: dict = field(default_factory=dict)


def resolve_num_classes(cfg: ULAConfig, num_target_ids: int) -> int:
    """K: ``cfg.num_classes`` when set, else ``class_ratio`` x the target's identities (at least 1)."""
    if cfg.num_classes is not None:
        return cfg.num_classes
    if num_target_ids < 1:
        raise ValueError(f"num_target_ids={num_target_ids} must be >= 1 to derive K from ula.class_ratio")
    return max(1, round(cfg.class_ratio * num_target_ids))


def label_adaptation(
    features: torch.Tensor | np.ndarray, cfg: ULAConfig, num_classes: int, true_ids: np.ndarray | None = None
) -> ULAResult:
    """Pseudo labels and templates for [N, D] target features.

    ``true_ids`` (ground truth) only feeds the quality diagnostics (pairwise precision/recall,
    purity, NMI); the labels never depend on it. eps_mode=quantile uses the eps_quantile quantile of
    the pairwise distances (MMT instead averages the distances below such a quantile).
    """
    features = as_numpy(features).astype(np.float32, copy=False)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"ULA needs [N, D] features with N >= 2 samples, got shape {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError("ULA features contain NaN or inf: the model diverged, lower the learning rate")
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes} must be >= 1: set ula.num_classes or ula.class_ratio")
    num_samples = len(features)
    if true_ids is not None:
        true_ids = as_numpy(true_ids)
        if true_ids.shape != (num_samples,):
            raise ValueError(f"true_ids must have one id per feature ({num_samples}), got shape {true_ids.shape}")

    unit_features = normalize(features)
    clustered = unit_features if cfg.normalize else features
    if cfg.distance == "jaccard":
        dist = jaccard_distance(clustered, k1=cfg.k1, k2=cfg.k2)
    else:
        as_tensor = torch.from_numpy(clustered)
        dist = compute_distance_matrix(as_tensor, as_tensor, "euclidean").numpy()
    eps = cfg.eps if cfg.eps_mode == "fixed" else _upper_triangle_quantile(dist, cfg.eps_quantile)
    if eps <= 0:
        raise ValueError(
            f"eps={eps} derived from ula.eps_quantile={cfg.eps_quantile} is not positive (many duplicate "
            "features): raise ula.eps_quantile or use ula.eps_mode=fixed"
        )
    cluster_ids = DBSCAN(eps=eps, min_samples=cfg.min_samples, metric="precomputed").fit_predict(dist)

    base_clusters = _largest_clusters(cluster_ids, dist, num_classes)
    pseudo_labels = np.full(num_samples, UNLABELLED, dtype=np.int64)
    for label, cluster in enumerate(base_clusters):
        pseudo_labels[cluster_ids == cluster] = label
    templates = np.zeros((len(base_clusters), features.shape[1]), dtype=np.float32)
    if len(base_clusters):
        np.add.at(templates, pseudo_labels[pseudo_labels >= 0], unit_features[pseudo_labels >= 0])
        templates = normalize(templates).astype(np.float32)
        others = np.flatnonzero(pseudo_labels == UNLABELLED)
        similarity = unit_features[others] @ templates.T
        best = similarity.argmax(axis=1)
        accepted = similarity[np.arange(len(others)), best] > cfg.similarity_threshold
        pseudo_labels[others[accepted]] = best[accepted]

    diagnostics = _diagnostics(cfg, cluster_ids, pseudo_labels, len(base_clusters), num_classes, eps, true_ids)
    _log(diagnostics)
    return ULAResult(pseudo_labels=pseudo_labels, templates=templates, diagnostics=diagnostics)


def _upper_triangle_quantile(dist: np.ndarray, quantile: float) -> float:
    """Quantile over the distinct pairs (i < j), as MMT derives its eps from the pairwise distances."""
    return float(np.quantile(dist[np.triu(np.ones(dist.shape, dtype=bool), 1)], quantile))


def _largest_clusters(cluster_ids: np.ndarray, dist: np.ndarray, num_classes: int) -> list[int]:
    """The num_classes largest DBSCAN clusters; ties go to the densest (smallest mean intra distance)."""
    clusters, sizes = np.unique(cluster_ids[cluster_ids >= 0], return_counts=True)
    ranking = []
    for cluster, size in zip(clusters, sizes, strict=True):
        members = np.flatnonzero(cluster_ids == cluster)
        pairs = size * (size - 1)
        mean_distance = dist[np.ix_(members, members)].sum() / pairs if pairs else 0.0
        ranking.append((-int(size), float(mean_distance), int(cluster)))
    return [cluster for _, _, cluster in sorted(ranking)[:num_classes]]


def _diagnostics(
    cfg: ULAConfig,
    cluster_ids: np.ndarray,
    pseudo_labels: np.ndarray,
    num_base: int,
    num_classes: int,
    eps: float,
    true_ids: np.ndarray | None,
) -> dict:
    num_samples = len(cluster_ids)
    sizes = np.bincount(cluster_ids[cluster_ids >= 0]) if (cluster_ids >= 0).any() else np.zeros(0, dtype=int)
    labelled = pseudo_labels >= 0
    diagnostics = {
        "num_samples": num_samples,
        "num_clusters": len(sizes),
        "num_classes": num_base,
        "requested_classes": num_classes,  # K: the cap binds when DBSCAN finds more clusters than this
        "num_labelled": int(labelled.sum()),
        "labelled_fraction": float(labelled.mean()),
        "largest_cluster_fraction": float(sizes.max() / num_samples) if len(sizes) else 0.0,
        "eps": float(eps),
        "num_noise": int((cluster_ids < 0).sum()),
    }
    reason = _degenerate_reason(cfg, diagnostics, num_classes)
    diagnostics["degenerate"] = bool(reason)
    diagnostics["reason"] = reason
    if true_ids is not None:
        diagnostics.update(_label_quality(true_ids[labelled], pseudo_labels[labelled]))
    return diagnostics


def _degenerate_reason(cfg: ULAConfig, diagnostics: dict, num_classes: int) -> str:
    """One line naming what went wrong and the knob to turn; empty when the clustering is usable."""
    n, eps = diagnostics["num_samples"], diagnostics["eps"]
    found, largest = diagnostics["num_clusters"], diagnostics["largest_cluster_fraction"]
    too_coarse = "lower ula.eps or use ula.eps_mode=quantile / ula.distance=jaccard"
    too_fine = "raise ula.eps (or ula.eps_quantile) or lower ula.min_samples"
    if found == 0:
        return f"DBSCAN found no cluster among {n} samples at eps={eps:.2f} (min_samples={cfg.min_samples}): {too_fine}"
    if diagnostics["num_classes"] < 2:
        if num_classes < 2:
            return f"ULA was asked for {num_classes} base class: set ula.num_classes (or ula.class_ratio) so K >= 2"
        fix = too_coarse if largest > cfg.max_cluster_fraction else too_fine
        return f"DBSCAN found 1 cluster holding {largest:.0%} of {n} samples at eps={eps:.2f}: {fix}"
    if largest > cfg.max_cluster_fraction:
        return (
            f"DBSCAN's largest of {found} clusters holds {largest:.0%} of {n} samples at eps={eps:.2f} "
            f"(ula.max_cluster_fraction={cfg.max_cluster_fraction}): {too_coarse}"
        )
    if diagnostics["labelled_fraction"] < cfg.min_labelled_fraction:
        return (
            f"only {diagnostics['labelled_fraction']:.1%} of {n} samples got a pseudo label at eps={eps:.2f} "
            f"(ula.min_labelled_fraction={cfg.min_labelled_fraction}): {too_fine} or ula.similarity_threshold"
        )
    return ""


def _label_quality(true_ids: np.ndarray, pseudo_labels: np.ndarray) -> dict:
    """Pairwise precision/recall, purity and NMI over the labelled samples (NaN when undefined)."""
    if len(pseudo_labels) == 0:
        return {"precision": float("nan"), "recall": float("nan"), "purity": float("nan"), "nmi": float("nan")}
    pairs = pair_confusion_matrix(true_ids, pseudo_labels)  # [[TN, FP], [FN, TP]], ordered pairs
    true_positive, predicted_same, truly_same = pairs[1, 1], pairs[:, 1].sum(), pairs[1, :].sum()
    return {
        "precision": float(true_positive / predicted_same) if predicted_same else float("nan"),
        "recall": float(true_positive / truly_same) if truly_same else float("nan"),
        "purity": float(contingency_matrix(true_ids, pseudo_labels).max(axis=0).sum() / len(pseudo_labels)),
        "nmi": float(normalized_mutual_info_score(true_ids, pseudo_labels)),
    }


def _log(diagnostics: dict) -> None:
    quality = ""
    if "precision" in diagnostics:
        quality = " precision {precision:.3f} recall {recall:.3f} purity {purity:.3f} nmi {nmi:.3f}".format(
            **diagnostics
        )
    summary = (
        "ULA: {num_labelled}/{num_samples} labelled ({labelled_fraction:.1%}) in {num_classes} classes from "
        "{num_clusters} clusters, eps {eps:.3f}, noise {num_noise}, largest {largest_cluster_fraction:.1%}"
    ).format(**diagnostics) + quality
    if diagnostics["degenerate"]:
        logger.warning("%s; DEGENERATE: %s", summary, diagnostics["reason"])
    else:
        logger.info("%s", summary)


__all__ = ["UNLABELLED", "ULAResult", "label_adaptation", "resolve_num_classes"]

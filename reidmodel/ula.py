"""Unsupervised label adaptation (ULA, docs/method.md sections 5 and 8): pseudo labels for the target domain.

DBSCAN groups the target features; the K largest clusters become base classes whose mean
(L2-normalised) features are the identity templates; every other sample joins the template it is
most similar to when the cosine similarity clears a threshold. A clustering that collapses (one
giant cluster, no clusters, almost nothing labelled) is reported as degenerate in the diagnostics
so that the caller never fine-tunes on it unknowingly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.cluster import DBSCAN
from sklearn.metrics import normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix, pair_confusion_matrix
from sklearn.preprocessing import normalize

from reidmodel.config import ULAConfig
from reidmodel.cycle_metrics import metric
from reidmodel.evaluation import as_numpy, compute_distance_matrix, pairwise_distances, prepare_operand
from reidmodel.rerank import KReciprocalEncoding

logger = logging.getLogger(__name__)

UNLABELLED = -1


@dataclass
class ULAResult:
    pseudo_labels: np.ndarray  # int64 [N]; -1 = unlabelled, classes 0..K'-1 (largest base cluster first)
    templates: np.ndarray  # float32 [K', D], L2-normalised
    cluster_ids: np.ndarray | None = None  # int64 [N]: DBSCAN's clusters, -1 = noise
    # distance_rows(rows, columns) -> dense float32 block of the distance DBSCAN clustered on (label-free validators)
    distance_rows: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    # Its keys named in reidmodel.cycle_metrics.ULA_KEYS are reported per cycle as ula_*; the rest are for the log.
    diagnostics: dict = field(default_factory=dict)


def resolve_num_classes(cfg: ULAConfig, num_target_ids: int) -> int | None:
    """K: ``cfg.num_classes`` when set, else ``class_ratio`` x the target's identities (at least 1); None when
    ``class_ratio_of`` is clusters, which ``label_adaptation`` counts only once it has clustered."""
    if cfg.num_classes is not None:
        return cfg.num_classes
    if cfg.class_ratio_of == "clusters":
        return None
    if num_target_ids < 1:
        raise ValueError(f"num_target_ids={num_target_ids} must be >= 1 to derive K from ula.class_ratio")
    return max(1, round(cfg.class_ratio * num_target_ids))


def label_adaptation(
    features: torch.Tensor | np.ndarray, cfg: ULAConfig, num_classes: int | None,
    true_ids: np.ndarray | None = None,
) -> ULAResult:
    """Pseudo labels and templates for [N, D] target features.

    ``num_classes`` is K; None: ``cfg.class_ratio`` x the clusters DBSCAN finds here (at least 1), which reads
    no label. ``true_ids`` (ground truth) only feeds the quality diagnostics (pairwise precision/recall,
    purity, NMI); the labels never depend on it. eps_mode=quantile uses the eps_quantile quantile of
    the pairwise distances (MMT instead averages the distances below such a quantile).
    """
    features, true_ids = _checked_inputs(features, num_classes, true_ids)
    unit_features = normalize(features)
    cluster_ids, eps, intra_sums, distance_rows = _cluster(unit_features if cfg.normalize else features, cfg)
    if num_classes is None:
        num_classes = max(1, round(cfg.class_ratio * (int(cluster_ids.max()) + 1)))  # DBSCAN numbers them 0..n-1
    base_clusters = _largest_clusters(cluster_ids, intra_sums, num_classes)
    pseudo_labels, templates = _assign_labels(cluster_ids, base_clusters, unit_features, cfg.similarity_threshold)
    diagnostics = _diagnostics(cfg, cluster_ids, pseudo_labels, num_base=len(base_clusters),
                               num_classes=num_classes, eps=eps, true_ids=true_ids)
    _log(diagnostics)
    return ULAResult(pseudo_labels=pseudo_labels, templates=templates, cluster_ids=cluster_ids,
                     distance_rows=distance_rows, diagnostics=diagnostics)


def _checked_inputs(features, num_classes: int | None, true_ids) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 features and NumPy true ids, or a one-line error naming what is wrong with them."""
    features = as_numpy(features).astype(np.float32, copy=False)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"ULA needs [N, D] features with N >= 2 samples, got shape {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError("ULA features contain NaN or inf: the model diverged, lower the learning rate")
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes={num_classes} must be >= 1: set ula.num_classes or ula.class_ratio")
    if true_ids is not None:
        true_ids = as_numpy(true_ids)
        if true_ids.shape != (len(features),):
            raise ValueError(f"true_ids must have one id per feature ({len(features)}), got shape {true_ids.shape}")
    return features, true_ids


def _cluster(features: np.ndarray, cfg: ULAConfig) -> tuple[np.ndarray, float, Callable, Callable]:
    """DBSCAN cluster ids (-1 noise), the eps used, the intra-cluster distance sums of that distance and its
    dense blocks ``distance_rows(rows, columns)``."""
    if cfg.distance == "jaccard":
        graph, eps, intra_sums, distance_rows = _jaccard_neighbourhoods(features, cfg)
    else:
        graph, eps, intra_sums, distance_rows = _euclidean_neighbourhoods(features, cfg)
    if eps <= 0:
        raise ValueError(
            f"eps={eps} derived from ula.eps_quantile={cfg.eps_quantile} is not positive (many duplicate "
            "features): raise ula.eps_quantile or use ula.eps_mode=fixed"
        )
    num_samples = len(features)
    if graph is None:  # eps reaches every pair: one cluster of all samples, or all noise
        cluster_ids = np.full(num_samples, 0 if num_samples >= cfg.min_samples else -1, dtype=np.int64)
    else:
        cluster_ids = DBSCAN(eps=eps, min_samples=cfg.min_samples, metric="precomputed").fit_predict(graph)
    return cluster_ids, eps, intra_sums, distance_rows


def _assign_labels(cluster_ids: np.ndarray, base_clusters: list[int], unit_features: np.ndarray,
                   threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo labels and templates: base cluster i is class i, and every other sample joins the template
    it is most similar to when the cosine similarity clears ``threshold``."""
    pseudo_labels = np.full(len(cluster_ids), UNLABELLED, dtype=np.int64)
    for label, cluster in enumerate(base_clusters):
        pseudo_labels[cluster_ids == cluster] = label
    templates = np.zeros((len(base_clusters), unit_features.shape[1]), dtype=np.float32)
    if len(base_clusters):
        np.add.at(templates, pseudo_labels[pseudo_labels >= 0], unit_features[pseudo_labels >= 0])
        templates = normalize(templates).astype(np.float32)
        others = np.flatnonzero(pseudo_labels == UNLABELLED)
        similarity = unit_features[others] @ templates.T
        best = similarity.argmax(axis=1)
        accepted = similarity[np.arange(len(others)), best] > threshold
        pseudo_labels[others[accepted]] = best[accepted]
    return pseudo_labels, templates


# Rows of the distance matrix computed at once while neighbourhoods are collected (float32, as many bytes).
_BLOCK_BYTES = 128 * 1024**2
# Members whose pairwise distances are summed at once when sizes tie (bounds the [rows, m] block).
_TIE_ROWS = 2048


def _jaccard_neighbourhoods(features: np.ndarray, cfg: ULAConfig):
    """The pairs within eps of the k-reciprocal Jaccard distance (sparse), eps, a block-sum function and the
    distance's dense blocks.

    Pairs whose encodings share nothing are at distance 1, so they are neighbours only when eps >= 1,
    where every pair is one (returned as graph None).
    """
    encoding = KReciprocalEncoding.from_features(features, k1=cfg.k1, k2=cfg.k2)
    num = len(features)
    if cfg.eps_mode == "fixed":
        eps = cfg.eps
    else:
        overlapping = encoding.jaccard_graph(upper=True).data
        eps = _pair_quantile(np.sort(overlapping), num * (num - 1) // 2, cfg.eps_quantile, rest=1.0)
    graph = None if eps >= 1 else encoding.jaccard_graph(eps)

    def intra_sums(clusters: list[np.ndarray]) -> list:
        return [_block_sum(encoding.jaccard_rows, members) for members in clusters]

    return graph, eps, intra_sums, encoding.jaccard_rows


def _euclidean_neighbourhoods(features: np.ndarray, cfg: ULAConfig):
    """The pairs within eps of the Euclidean distance (sparse), eps, a block-sum function and the distance's dense
    blocks."""
    num = len(features)
    num_pairs = num * (num - 1) // 2
    if cfg.eps_mode == "fixed":
        eps = cfg.eps
        rows, cols, values = _close_pairs(features, limit=eps)
    else:
        # np.quantile interpolates between the order statistics floor(v) and floor(v) + 1, v = q (n - 1).
        needed = min(num_pairs, int(np.floor(cfg.eps_quantile * (num_pairs - 1))) + 2)
        rows, cols, values = _close_pairs(features, smallest=needed)
        eps = _pair_quantile(np.sort(values), num_pairs, cfg.eps_quantile)
        within = values <= eps
        rows, cols, values = rows[within], cols[within], values[within]
    distances = _euclidean_blocks(features)
    return _symmetric_graph(rows, cols, values, num), eps, _euclidean_intra_sums(features, distances), distances


def _close_pairs(features: np.ndarray, *, limit: float = np.inf, smallest: int | None = None):
    """(rows, cols, distances) of the pairs i < j at most ``limit`` apart or, with ``smallest``, of the
    ``smallest`` nearest pairs and their ties: enough to read a quantile of all pairs exactly.

    Blocks of rows are compared with the rows after them only (each pair once); the running smallest
    distances are all that is kept while the blocks stream by.
    """
    operand = prepare_operand(torch.from_numpy(features), "euclidean")
    num = len(features)
    rows, cols, values = [], [], []
    kept = 0
    step = max(1, _BLOCK_BYTES // (4 * num))
    for start in range(0, num, step):
        stop = min(num, start + step)
        block = pairwise_distances(
            (operand[0][start:stop], operand[1][start:stop]), (operand[0][start:], operand[1][start:]), "euclidean"
        ).numpy()
        block[:, : stop - start][np.tri(stop - start, dtype=bool)] = np.inf  # the pair (i, j) once, i < j
        if smallest is not None:
            candidates = block.ravel() if limit == np.inf else block[block <= limit]
            if kept + len(candidates) > smallest:
                # Keep the `smallest` so far (and ties): nothing beyond can reach the quantile.
                limit = float(np.partition(np.concatenate(values + [candidates]), smallest - 1)[smallest - 1])
                for i, part in enumerate(values):
                    within = part <= limit
                    rows[i], cols[i], values[i] = rows[i][within], cols[i][within], part[within]
            del candidates
        flat = np.flatnonzero(block <= limit)
        found = block.ravel()[flat]
        width = num - start
        rows.append((flat // width + start).astype(np.int32))
        cols.append((flat % width + start).astype(np.int32))
        values.append(found)
        kept = sum(len(v) for v in values)
    return tuple(np.concatenate(a) for a in (rows, cols, values))


def _euclidean_blocks(features: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``distances(rows, columns)``: the dense block of Euclidean distances between those samples."""

    def distances(rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        return compute_distance_matrix(torch.from_numpy(features[rows]), torch.from_numpy(features[columns])).numpy()

    return distances


def _euclidean_intra_sums(features: np.ndarray, distances: Callable) -> Callable:
    """``intra_sums(member lists)`` for ``_largest_clusters``: each cluster's summed pairwise distances."""

    def intra_sums(clusters: list[np.ndarray]) -> list:
        # Clusters of one size are batched (size ties are what asks for these sums): one bmm per batch.
        sums = [None] * len(clusters)
        by_size: dict[int, list[int]] = {}
        for i, members in enumerate(clusters):
            by_size.setdefault(len(members), []).append(i)
        for size, indices in by_size.items():
            if size > _TIE_ROWS:
                for i in indices:
                    sums[i] = _block_sum(distances, clusters[i])
                continue
            step = max(1, _BLOCK_BYTES // (4 * size * max(size, features.shape[1])))
            for start in range(0, len(indices), step):
                batch = indices[start : start + step]
                x = torch.from_numpy(features[np.stack([clusters[i] for i in batch])])  # [batch, size, D]
                norms = x.pow(2).sum(2)
                squared = (norms[:, :, None] + norms[:, None, :]).baddbmm_(x, x.transpose(1, 2), alpha=-2)
                for i, total in zip(batch, squared.clamp_(min=0).sqrt_().sum((1, 2)).numpy(), strict=True):
                    sums[i] = total
        return sums

    return intra_sums


def _block_sum(distances: Callable, members: np.ndarray):
    """Sum of the members' pairwise distance block (float32, like the dense block's sum), by row blocks."""
    total = np.float32(0)
    for start in range(0, len(members), _TIE_ROWS):
        total += distances(members[start : start + _TIE_ROWS], members).sum()
    return total


def _symmetric_graph(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, num: int) -> sp.csr_matrix:
    """CSR graph of the pairs (i < j) both ways plus an explicit zero diagonal (each sample is its own
    neighbour, as in the dense matrix; scikit-learn ignores absent entries but keeps stored zeros)."""
    diagonal = np.arange(num, dtype=np.int32)
    all_rows = np.concatenate([rows, cols, diagonal])
    all_cols = np.concatenate([cols, rows, diagonal])
    data = np.concatenate([values, values, np.zeros(num, dtype=np.float32)])
    order = np.lexsort((all_cols, all_rows))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(all_rows, minlength=num))])
    return sp.csr_matrix((data[order], all_cols[order], indptr), shape=(num, num))


def _pair_quantile(smallest: np.ndarray, num_pairs: int, quantile: float, rest: float | None = None) -> float:
    """np.quantile (linear) of all ``num_pairs`` pairwise distances, from the smallest ones, sorted.

    ``rest`` is the value of the pairs not listed (the Jaccard distance of non-overlapping pairs).
    The same arithmetic as NumPy's, so eps equals the dense matrix's quantile to the last bit.
    """
    virtual = num_pairs * np.asarray(quantile, dtype=np.float64) + (1 + quantile * (1 - 1 - 1)) - 1
    lower = int(min(max(np.floor(virtual), 0), num_pairs - 1))
    upper = min(lower + 1, num_pairs - 1)

    def order_statistic(index: int):
        return smallest[index] if index < len(smallest) else np.float32(rest)

    below, above = order_statistic(lower), order_statistic(upper)
    gamma = float(virtual - np.floor(virtual))
    difference = above - below
    value = above - difference * (1 - gamma) if gamma >= 0.5 else below + difference * gamma
    return float(value)


def _largest_clusters(cluster_ids: np.ndarray, intra_sums: Callable, num_classes: int) -> list[int]:
    """The num_classes largest DBSCAN clusters; ties go to the densest (smallest mean intra distance).

    ``intra_sums(member lists)`` gives the sum of each cluster's pairwise distances. Means are only
    computed where they decide something: for clusters whose size another cluster shares, at sizes that
    reach into the num_classes kept (elsewhere the order is that of the sizes alone). The Jaccard sums are
    those of the dense matrix's blocks, bit for bit, for clusters of up to _TIE_ROWS members; the
    Euclidean ones sum the same distances from a matmul of the members only (equal up to float rounding).
    """
    clusters, sizes = np.unique(cluster_ids[cluster_ids >= 0], return_counts=True)
    if len(clusters) == 0:
        return []
    cutoff = np.sort(sizes)[::-1][min(num_classes, len(sizes)) - 1]
    distinct, counts = np.unique(sizes, return_counts=True)
    decides = (counts[np.searchsorted(distinct, sizes)] > 1) & (sizes >= cutoff) & (sizes > 1)
    chosen = np.flatnonzero(decides)
    order = np.argsort(cluster_ids, kind="stable")  # members of every cluster, grouped, ascending
    first = np.searchsorted(cluster_ids[order], clusters)
    sums = intra_sums([order[first[i] : first[i] + sizes[i]] for i in chosen])
    means = [0.0] * len(clusters)
    for i, total in zip(chosen, sums, strict=True):
        means[i] = float(total / (sizes[i] * (sizes[i] - 1)))  # the dense path's arithmetic
    ranking = [(-int(size), mean, int(cluster)) for cluster, size, mean in zip(clusters, sizes, means, strict=True)]
    return [cluster for _, _, cluster in sorted(ranking)[:num_classes]]


def _diagnostics(
    cfg: ULAConfig,
    cluster_ids: np.ndarray,
    pseudo_labels: np.ndarray,
    *,
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


# The diagnostics that need the true identities.
_QUALITY_KEYS = ("precision", "recall", "purity", "nmi")


def _label_quality(true_ids: np.ndarray, pseudo_labels: np.ndarray) -> dict:
    """Pairwise precision/recall, purity and NMI over the labelled samples (NaN when undefined)."""
    if len(pseudo_labels) == 0:
        return dict.fromkeys(_QUALITY_KEYS, float("nan"))
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
    for key in _QUALITY_KEYS if "precision" in diagnostics else ():
        reported = metric(f"ula_{key}")
        quality += f" {reported.label} {reported.format(diagnostics[key])}"
    summary = (
        "ULA: {num_labelled}/{num_samples} labelled ({labelled_fraction:.1%}) in {num_classes} classes from "
        "{num_clusters} clusters, eps {eps:.3f}, noise {num_noise}, largest {largest_cluster_fraction:.1%}"
    ).format(**diagnostics) + quality
    if diagnostics["degenerate"]:
        logger.warning("%s; DEGENERATE: %s", summary, diagnostics["reason"])
    else:
        logger.info("%s", summary)


__all__ = ["UNLABELLED", "ULAResult", "label_adaptation", "resolve_num_classes"]

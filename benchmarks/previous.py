"""The implementations before issue 9 (commit dcbab9a), kept verbatim for side-by-side figures.

The benchmark times them next to the current code in the same run ("before" columns) and checks
that both give the same numbers. Dense throughout: an N x N distance matrix, a full sort of every
row. Not used by the library.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from sklearn.cluster import DBSCAN

from reidmodel.evaluation import as_numpy

_BYTES_PER_ENTRY = 48
_DEFAULT_BYTE_BUDGET = 256 * 1024**2
_ROW_CHUNK = 256
JUNK_PID = -1


def compute_distance_matrix(
    qf: torch.Tensor, gf: torch.Tensor, metric: Literal["euclidean", "cosine"] = "euclidean"
) -> torch.Tensor:
    """Pairwise [Q, G] distances; Euclidean via the squared expansion, cosine as 1 - cos."""
    qf = torch.as_tensor(qf, dtype=torch.float32)
    gf = torch.as_tensor(gf, dtype=torch.float32)
    if qf.dim() != 2 or gf.dim() != 2 or qf.shape[1] != gf.shape[1]:
        raise ValueError(
            f"features must be [Q, D] and [G, D] with the same D, got {tuple(qf.shape)} and {tuple(gf.shape)}"
        )
    if metric == "euclidean":
        squared = qf.pow(2).sum(1, keepdim=True) + gf.pow(2).sum(1).unsqueeze(0) - 2 * qf @ gf.t()
        # Rounding makes some near-zero squared distances slightly negative; sqrt would give NaN.
        return squared.clamp_(min=0).sqrt_()
    if metric == "cosine":
        return 1 - F.normalize(qf, dim=1) @ F.normalize(gf, dim=1).t()
    raise ValueError(f"unknown distance metric {metric!r}: use 'euclidean' or 'cosine'")



def evaluate_rank(
    distmat,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    max_rank: int = 50,
    byte_budget: int = _DEFAULT_BYTE_BUDGET,
) -> dict:
    """CMC, mAP and mINP under the Market-1501 protocol.

    Per query, gallery entries with the same pid and camera are removed (they are trivially easy),
    junk (pid -1) is removed, distractors (pid 0) stay as negatives, and a query with no remaining
    match is skipped. Ties in distance are broken by gallery index (stable sort). Queries are ranked
    in chunks whose working memory stays under ``byte_budget`` bytes (256 MiB by default: about 350
    queries against Market's 15913 gallery images).
    """
    distmat = as_numpy(distmat)
    q_pids, g_pids = as_numpy(q_pids).astype(np.int32), as_numpy(g_pids).astype(np.int32)
    q_camids, g_camids = as_numpy(q_camids).astype(np.int32), as_numpy(g_camids).astype(np.int32)
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be a [num_query, num_gallery] matrix, got shape {distmat.shape}")
    num_q, num_g = distmat.shape
    if q_pids.shape != (num_q,) or q_camids.shape != (num_q,):
        raise ValueError(f"q_pids and q_camids must have length {num_q} (distmat rows), got "
                         f"{q_pids.shape} and {q_camids.shape}")
    if g_pids.shape != (num_g,) or g_camids.shape != (num_g,):
        raise ValueError(f"g_pids and g_camids must have length {num_g} (distmat columns), got "
                         f"{g_pids.shape} and {g_camids.shape}")
    if max_rank < 1:
        raise ValueError(f"max_rank={max_rank} must be >= 1")
    if num_g == 0:
        raise ValueError("the gallery is empty: evaluate against a non-empty gallery")

    chunk = max(1, byte_budget // (num_g * _BYTES_PER_ENTRY))
    ranks = np.arange(1, max_rank + 1)
    cmc_sum = np.zeros(max_rank, dtype=np.float64)
    ap_sum = inp_sum = 0.0
    num_valid = 0
    for start in range(0, num_q, chunk):
        rows = slice(start, start + chunk)
        order = np.argsort(distmat[rows], axis=1, kind="stable")
        ranked_pids = g_pids[order]
        same_pid = ranked_pids == q_pids[rows, None]
        keep = ~((same_pid & (g_camids[order] == q_camids[rows, None])) | (ranked_pids == JUNK_PID))
        del order, ranked_pids
        matches = same_pid & keep
        num_matches = matches.sum(1)
        valid = num_matches > 0
        if not valid.any():
            continue
        keep, matches, num_matches = keep[valid], matches[valid], num_matches[valid]
        # 1-based rank among the kept gallery entries, and the number of matches up to each position.
        kept_rank = np.cumsum(keep, axis=1, dtype=np.int32)
        hits = np.cumsum(matches, axis=1, dtype=np.int32)
        match_ranks = np.where(matches, kept_rank, 0)
        first_rank = np.where(matches, kept_rank, np.iinfo(np.int32).max).min(1)
        last_rank = match_ranks.max(1)
        # Ranks beyond the gallery size count like the last rank, which is a hit for a valid query.
        cmc_sum += (first_rank[:, None] <= ranks[None, :]).sum(0)
        precision_at_hits = np.divide(hits, match_ranks, out=np.zeros(hits.shape), where=matches)
        ap_sum += (precision_at_hits.sum(1) / num_matches).sum()
        inp_sum += (num_matches / last_rank).sum()
        num_valid += int(valid.sum())

    if num_valid == 0:
        raise ValueError("no query has a valid gallery match (same pid, other camera): check the query/gallery split")
    return {
        "cmc": cmc_sum / num_valid,
        "mAP": float(ap_sum / num_valid),
        "mINP": float(inp_sum / num_valid),
        "num_valid_queries": num_valid,
        "num_skipped_queries": num_q - num_valid,
    }



def re_ranking(q_g_dist, q_q_dist, g_g_dist, k1: int = 20, k2: int = 6, lambda_value: float = 0.3) -> np.ndarray:
    """Re-ranked [Q, G] distance: (1 - lambda) * Jaccard + lambda * original.

    As in the paper's code, the original distances are squared and divided by their row maximum,
    so lambda mixes two quantities of the same [0, 1] scale.
    """
    q_g_dist, q_q_dist, g_g_dist = (as_numpy(d) for d in (q_g_dist, q_q_dist, g_g_dist))
    num_q, num_g = q_g_dist.shape
    if q_q_dist.shape != (num_q, num_q) or g_g_dist.shape != (num_g, num_g):
        raise ValueError(
            f"re_ranking needs q_q_dist [{num_q}, {num_q}] and g_g_dist [{num_g}, {num_g}] to match "
            f"q_g_dist [{num_q}, {num_g}], got {q_q_dist.shape} and {g_g_dist.shape}"
        )
    if not 0 <= lambda_value <= 1:
        raise ValueError(f"lambda_value={lambda_value} must lie in [0, 1]")
    original = np.block([[q_q_dist, q_g_dist], [q_g_dist.T, g_g_dist]]).astype(np.float32) ** 2
    row_max = original.max(axis=1, keepdims=True)
    original /= np.where(row_max > 0, row_max, 1)
    jaccard = k_reciprocal_jaccard(original, k1, k2, rows=np.arange(num_q))
    return (1 - lambda_value) * jaccard[:, num_q:] + lambda_value * original[:num_q, num_q:]


def jaccard_distance(features: torch.Tensor | np.ndarray, k1: int = 20, k2: int = 6) -> np.ndarray:
    """[N, N] k-reciprocal Jaccard distance among features, in [0, 1] whatever the feature scale.

    The encoding weights use squared Euclidean distances of the features as given (SpCL/MMT pass
    L2-normalised features, for which these lie in [0, 4]).
    """
    features = torch.as_tensor(features, dtype=torch.float32)
    if features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"jaccard_distance needs [N, D] features with N >= 2, got shape {tuple(features.shape)}")
    squared = compute_distance_matrix(features, features, "euclidean").pow_(2).numpy()
    return k_reciprocal_jaccard(squared, k1, k2)


def k_reciprocal_jaccard(dist: np.ndarray, k1: int, k2: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Jaccard distance between k-reciprocal encodings, for ``rows`` (default all) against all samples.

    ``dist`` is an [N, N] matrix of non-negative distances; it both ranks neighbours and weights them.
    """
    num = dist.shape[0]
    if dist.ndim != 2 or dist.shape[1] != num:
        raise ValueError(f"k-reciprocal encoding needs a square distance matrix, got shape {dist.shape}")
    if not 1 <= k1 < num or not 1 <= k2 <= num:
        raise ValueError(f"k1={k1} and k2={k2} must satisfy 1 <= k1 < N and 1 <= k2 <= N for N={num} samples")
    half = int(np.around(k1 / 2))
    nearest = _nearest(dist, max(k1 + 1, k2))
    encoding = _encode(dist, nearest, k1, half)
    if k2 > 1:
        # Query expansion: average the encodings of the k2 nearest neighbours (the sample included).
        expansion = sp.csr_matrix(
            (np.full(num * k2, 1 / k2, dtype=np.float32), nearest[:, :k2].ravel(), np.arange(0, num * k2 + 1, k2)),
            shape=(num, num),
        )
        encoding = (expansion @ encoding).tocsr()
    rows = np.arange(num) if rows is None else rows
    return _jaccard(encoding, rows)


def _nearest(dist: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's k nearest samples, ties broken by index."""
    return np.concatenate(
        [np.argsort(dist[s : s + _ROW_CHUNK], axis=1, kind="stable")[:, :k] for s in range(0, len(dist), _ROW_CHUNK)]
    )


def _reciprocal(nearest: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's k+1 nearest neighbours and a mask of those that rank it back in their k+1 nearest."""
    forward = nearest[:, : k + 1]
    backward = forward[forward]  # [N, k+1, k+1]: the neighbours' own neighbours
    is_reciprocal = (backward == np.arange(len(forward))[:, None, None]).any(axis=2)
    return forward, is_reciprocal


def _encode(dist: np.ndarray, nearest: np.ndarray, k1: int, half: int) -> sp.csr_matrix:
    """Sparse [N, N] k-reciprocal encodings: softmax(-dist) over each sample's expanded set."""
    num = len(dist)
    neighbours, is_neighbour = _reciprocal(nearest, k1)
    half_neighbours, is_half_neighbour = _reciprocal(nearest, half)
    # A neighbour c's half-set joins the set of i when more than 2/3 of it already lies in the set.
    candidates = half_neighbours[neighbours]  # [N, k1+1, half+1]
    candidate_valid = is_half_neighbour[neighbours] & is_neighbour[:, :, None]
    in_set = (candidates[..., None] == neighbours[:, None, None, :]) & is_neighbour[:, None, None, :]
    overlap = (in_set.any(axis=3) & candidate_valid).sum(axis=2)
    accepted = overlap > 2 / 3 * candidate_valid.sum(axis=2)
    grown = candidate_valid & accepted[:, :, None]

    row_ids = np.arange(num)
    pair_rows = np.concatenate(
        [np.broadcast_to(row_ids[:, None], neighbours.shape)[is_neighbour],
         np.broadcast_to(row_ids[:, None, None], candidates.shape)[grown]]
    )
    pair_cols = np.concatenate([neighbours[is_neighbour], candidates[grown]])
    keys = np.unique(pair_rows.astype(np.int64) * num + pair_cols)
    pair_rows, pair_cols = keys // num, keys % num
    pair_dist = dist[pair_rows, pair_cols].astype(np.float64)
    # Numerically stable softmax per row: shift by the row's smallest distance in its set.
    row_min = np.full(num, np.inf)
    np.minimum.at(row_min, pair_rows, pair_dist)
    weights = np.exp(-(pair_dist - row_min[pair_rows]))
    weights /= np.bincount(pair_rows, weights, minlength=num)[pair_rows]
    return sp.csr_matrix((weights.astype(np.float32), (pair_rows, pair_cols)), shape=(num, num))


def _jaccard(encoding: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """1 - sum(min)/sum(max) between the encodings of ``rows`` and of all samples (rows sum to 1)."""
    num = encoding.shape[0]
    by_column = encoding.tocsc()
    out = np.empty((len(rows), num), dtype=np.float32)
    for start in range(0, len(rows), _ROW_CHUNK):
        block = encoding[rows[start : start + _ROW_CHUNK]].tocoo()
        # For every nonzero (r, j) of the block, every sample s with a nonzero in column j.
        lengths = np.diff(by_column.indptr)[block.col]
        offsets = np.repeat(by_column.indptr[block.col] - np.cumsum(lengths) + lengths, lengths)
        positions = offsets + np.arange(lengths.sum())
        shared = np.minimum(np.repeat(block.data, lengths), by_column.data[positions])
        keys = np.repeat(block.row.astype(np.int64), lengths) * num + by_column.indices[positions]
        min_sum = np.bincount(keys, shared, minlength=block.shape[0] * num).reshape(block.shape[0], num)
        out[start : start + block.shape[0]] = np.clip(1 - min_sum / (2 - min_sum), 0, 1)
    return out


def cluster(features: np.ndarray, distance: str, eps: float, min_samples: int, num_classes: int,
            k1: int = 20, k2: int = 6) -> np.ndarray:
    """ULA's distance + DBSCAN + base-class choice as before: DBSCAN on the dense N x N matrix.

    Returns the base-class label of every sample (-1 outside the num_classes largest clusters).
    """
    if distance == "jaccard":
        dist = jaccard_distance(features, k1=k1, k2=k2)
    else:
        as_tensor = torch.from_numpy(features)
        dist = compute_distance_matrix(as_tensor, as_tensor, "euclidean").numpy()
    cluster_ids = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(dist)
    clusters, sizes = np.unique(cluster_ids[cluster_ids >= 0], return_counts=True)
    ranking = []
    for cluster_id, size in zip(clusters, sizes, strict=True):
        members = np.flatnonzero(cluster_ids == cluster_id)
        pairs = size * (size - 1)
        mean_distance = dist[np.ix_(members, members)].sum() / pairs if pairs else 0.0
        ranking.append((-int(size), float(mean_distance), int(cluster_id)))
    labels = np.full(len(features), -1, dtype=np.int64)
    for label, (_, _, cluster_id) in enumerate(sorted(ranking)[:num_classes]):
        labels[cluster_ids == cluster_id] = label
    return labels

"""k-reciprocal re-ranking (Zhong et al., "Re-ranking person re-identification with k-reciprocal
encoding", CVPR 2017) and the k-reciprocal Jaccard distance the clustering-based UDA methods feed
to DBSCAN.

Both build the same encoding: each sample's k-reciprocal neighbours (expanded by the neighbours'
own k/2-reciprocal sets when these mostly overlap), weighted by a softmax of minus the distance,
averaged over the k2 nearest neighbours (query expansion); the Jaccard distance between two
encodings is 1 - sum(min) / sum(max). Ties in the initial ranking are broken by index (stable sort),
so results are deterministic.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from reidmodel.evaluation import as_numpy, compute_distance_matrix

# Rows of the N x N distance matrix ranked (or Jaccard-compared) at once: bounds the rows x N
# temporaries to about 100 MB at Market scale (N ~ 20k).
_ROW_CHUNK = 256


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


__all__ = ["jaccard_distance", "k_reciprocal_jaccard", "re_ranking"]

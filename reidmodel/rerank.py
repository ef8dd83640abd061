"""k-reciprocal re-ranking (Zhong et al., "Re-ranking person re-identification with k-reciprocal
encoding", CVPR 2017) and the k-reciprocal Jaccard distance the clustering-based UDA methods feed
to DBSCAN.

Both build the same encoding: each sample's k-reciprocal neighbours (expanded by the neighbours'
own k/2-reciprocal sets when these mostly overlap), weighted by a softmax of minus the distance,
averaged over the k2 nearest neighbours (query expansion); the Jaccard distance between two
encodings is 1 - sum(min) / sum(max). Ties in the initial ranking are broken by index (as a stable
sort would), so results are deterministic.

Nothing here holds an N x N matrix. The nearest neighbours come from blocks of rows of the distances
(from features, one matmul per block against the samples after it; the block's transpose serves the
later rows, so each pair is computed once); the encodings are sparse (tens of non-zeros per row); and
Jaccard distances are produced a few hundred rows at a time, either as dense rows (re-ranking's
[Q, G] output) or as a sparse graph of the pairs within a radius, which scikit-learn's DBSCAN takes
with metric="precomputed". Memory grows with N x k, not N x N (SpCL and cluster-contrast do the same
from a faiss k-nearest-neighbour search).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

from reidmodel.evaluation import (
    as_numpy,
    paired_distances,
    pairwise_distances,
    prepare_operand,
    select_operand,
)

# One block of float32 distances while the nearest neighbours are searched: about 1000 rows at MSMT17's
# 32621 training images (the block's transpose takes as much again).
_BLOCK_BYTES = 128 * 1024**2
# Rows whose Jaccard distances are produced at once: a rows x N float64 buffer (67 MB at N = 32621).
_ROW_CHUNK = 256
# Rows whose k-reciprocal sets are expanded at once: bounds the [rows, k1+1, k/2+1, k1+1] comparison.
_ENCODE_ROWS = 2048
_PAIR_CHUNK = 4096  # pairs whose distance is computed at once from features (two [chunk, D] gathers)


class _Distances:
    """An N x N distance as the encoding reads it: blocks of rows, single rows, scattered pairs.

    ``blocks`` yields (start, stop, first_column, block): rows start..stop against the columns from
    first_column on. When ``symmetric`` is set the blocks hold only columns from ``start`` on and
    their transposed tail stands for the later rows. ``row_scale`` (set once the blocks were read,
    when ``scale_rows``) divides every distance of a row, as re-ranking normalises by the row maximum.
    """

    num: int
    symmetric = False
    scale_rows = False
    row_scale: np.ndarray | None = None

    def blocks(self) -> Iterator[tuple[int, int, int, torch.Tensor]]:
        raise NotImplementedError

    def row(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def pairs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class _FeatureDistances(_Distances):
    """Squared Euclidean (or squared cosine) distances among features, computed block by block."""

    symmetric = True

    def __init__(self, features: torch.Tensor, metric: str = "euclidean", scale_rows: bool = False):
        self.operand = prepare_operand(features, metric)
        self.metric = metric
        self.num = len(features)
        self.scale_rows = scale_rows

    def _block(self, start: int, stop: int, first_column: int) -> torch.Tensor:
        rows = (self.operand[0][start:stop], None if self.operand[1] is None else self.operand[1][start:stop])
        columns = (self.operand[0][first_column:],
                   None if self.operand[1] is None else self.operand[1][first_column:])
        return pairwise_distances(rows, columns, self.metric, squared=True)

    def blocks(self):
        step = max(1, _BLOCK_BYTES // (4 * self.num))
        for start in range(0, self.num, step):
            stop = min(self.num, start + step)
            yield start, stop, start, self._block(start, stop, start)

    def row(self, index):
        return self._block(index, index + 1, 0)[0].cpu().numpy()

    def pairs(self, rows, cols):
        out = np.empty(len(rows), dtype=np.float32)
        device = self.operand[0].device
        for s in range(0, len(rows), _PAIR_CHUNK):
            r = torch.from_numpy(rows[s : s + _PAIR_CHUNK]).to(device)
            c = torch.from_numpy(cols[s : s + _PAIR_CHUNK]).to(device)
            values = paired_distances(select_operand(self.operand, r), select_operand(self.operand, c),
                                      self.metric, squared=True)
            out[s : s + len(r)] = values.cpu().numpy()
        return out


class _MatrixDistances(_Distances):
    """A square matrix given by its rows (``rows_of(start, stop)``) and entries (``entries(rows, cols)``)."""

    def __init__(self, num: int, rows_of: Callable, entries: Callable):
        self.num, self.rows_of, self.entries = num, rows_of, entries

    def blocks(self):
        for start in range(0, self.num, _ROW_CHUNK):
            stop = min(self.num, start + _ROW_CHUNK)
            yield start, stop, 0, torch.from_numpy(np.ascontiguousarray(self.rows_of(start, stop), dtype=np.float32))

    def row(self, index):
        return np.asarray(self.rows_of(index, index + 1)[0], dtype=np.float32)

    def pairs(self, rows, cols):
        return np.asarray(self.entries(rows, cols), dtype=np.float32)


class _StackedSquares:
    """The squared entries of the (Q + G) square [[q_q, q_g], [q_g.T, g_g]], read from its three parts,
    so that re-ranking never stacks them into one matrix."""

    def __init__(self, q_g_dist: np.ndarray, q_q_dist: np.ndarray, g_g_dist: np.ndarray):
        self.q_g, self.q_q, self.g_g = q_g_dist, q_q_dist, g_g_dist
        self.num_q = q_g_dist.shape[0]
        self.num = self.num_q + q_g_dist.shape[1]

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop, squared in float32."""
        num_q, parts = self.num_q, []
        if start < num_q:
            top = slice(start, min(stop, num_q))
            parts.append(np.concatenate([self.q_q[top], self.q_g[top]], axis=1))
        if stop > num_q:
            bottom = slice(max(start, num_q) - num_q, stop - num_q)
            parts.append(np.concatenate([self.q_g[:, bottom].T, self.g_g[bottom]], axis=1))
        return np.concatenate(parts).astype(np.float32) ** 2

    def entries(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The (row, col) entries, squared in float32."""
        num_q = self.num_q
        out = np.empty(len(rows), dtype=np.float32)
        for in_q_rows in (True, False):
            for in_q_cols in (True, False):
                pick = ((rows < num_q) == in_q_rows) & ((cols < num_q) == in_q_cols)
                r = rows[pick] - (0 if in_q_rows else num_q)
                c = cols[pick] - (0 if in_q_cols else num_q)
                if in_q_rows:
                    values = self.q_q[r, c] if in_q_cols else self.q_g[r, c]
                else:
                    values = self.q_g[c, r] if in_q_cols else self.g_g[r, c]
                out[pick] = np.asarray(values).astype(np.float32) ** 2
        return out


def re_ranking(
    q_g_dist, q_q_dist, g_g_dist, *, k1: int = 20, k2: int = 6, lambda_value: float = 0.3
) -> np.ndarray:
    """Re-ranked [Q, G] distance: (1 - lambda) * Jaccard + lambda * original.

    As in the paper's code, the original distances are squared and divided by their row maximum,
    so lambda mixes two quantities of the same [0, 1] scale. The three matrices are read a block of
    rows at a time; ``re_ranking_features`` starts from features and never builds them.
    """
    q_g_dist, q_q_dist, g_g_dist = (as_numpy(d) for d in (q_g_dist, q_q_dist, g_g_dist))
    num_q, num_g = q_g_dist.shape
    if q_q_dist.shape != (num_q, num_q) or g_g_dist.shape != (num_g, num_g):
        raise ValueError(
            f"re_ranking needs q_q_dist [{num_q}, {num_q}] and g_g_dist [{num_g}, {num_g}] to match "
            f"q_g_dist [{num_q}, {num_g}], got {q_q_dist.shape} and {g_g_dist.shape}"
        )
    _check_lambda(lambda_value)
    stacked = _StackedSquares(q_g_dist, q_q_dist, g_g_dist)
    num = stacked.num
    scale = np.concatenate([stacked.rows(s, s + _ROW_CHUNK).max(axis=1) for s in range(0, num, _ROW_CHUNK)])
    scale = np.where(scale > 0, scale, np.float32(1)).astype(np.float32)
    source = _MatrixDistances(
        num,
        lambda start, stop: stacked.rows(start, stop) / scale[start:stop, None],
        lambda rows, cols: stacked.entries(rows, cols) / scale[rows],
    )
    encodings = KReciprocalEncoding.build(source, k1, k2)
    original = q_g_dist.astype(np.float32) ** 2 / scale[:num_q, None]
    return _mix(encodings, num_q, original, lambda_value)


def re_ranking_features(
    qf, gf, *, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
    metric: Literal["euclidean", "cosine"] = "euclidean",
) -> np.ndarray:
    """``re_ranking`` of the ``metric`` distances among query and gallery features, in bounded memory.

    The same numbers as re_ranking(compute_distance_matrix(qf, gf), ...(qf, qf), ...(gf, gf)) up to
    float rounding, except that the neighbours are ranked by the squared distances before the row
    maximum scales them (a monotone map; the matrix version ranks after it, which differs only when
    the division rounds two distances to one value). Only the [Q, G] result is dense.
    """
    qf = torch.as_tensor(qf, dtype=torch.float32)
    gf = torch.as_tensor(gf, dtype=torch.float32, device=qf.device)
    if qf.dim() != 2 or gf.dim() != 2 or qf.shape[1] != gf.shape[1]:
        raise ValueError(
            f"features must be [Q, D] and [G, D] with the same D, got {tuple(qf.shape)} and {tuple(gf.shape)}"
        )
    _check_lambda(lambda_value)
    num_q = len(qf)
    source = _FeatureDistances(torch.cat([qf, gf]), metric, scale_rows=True)
    original = np.empty((num_q, len(gf)), dtype=np.float32)

    def keep_query_rows(start, stop, first_column, block):
        if start < num_q:  # symmetric blocks of query rows start before the gallery columns
            rows = slice(start, min(stop, num_q))
            original[rows] = block[: rows.stop - start, num_q - first_column :].cpu().numpy()

    encodings = KReciprocalEncoding.build(source, k1, k2, on_block=keep_query_rows)
    original /= source.row_scale[:num_q, None]
    return _mix(encodings, num_q, original, lambda_value)


def _mix(encodings: KReciprocalEncoding, num_q: int, original: np.ndarray, lambda_value: float) -> np.ndarray:
    """(1 - lambda) * Jaccard + lambda * original over the query rows and gallery columns, in place."""
    gallery = np.arange(num_q, encodings.num)
    for start in range(0, num_q, _ROW_CHUNK):
        rows = np.arange(start, min(num_q, start + _ROW_CHUNK))
        jaccard = encodings.jaccard_rows(rows, gallery)
        block = original[rows]
        original[rows] = (1 - lambda_value) * jaccard + lambda_value * block
    return original


def _check_lambda(lambda_value: float) -> None:
    if not 0 <= lambda_value <= 1:
        raise ValueError(f"lambda_value={lambda_value} must lie in [0, 1]")


def jaccard_distance(features: torch.Tensor | np.ndarray, k1: int = 20, k2: int = 6) -> np.ndarray:
    """Dense [N, N] k-reciprocal Jaccard distance among features, in [0, 1] whatever the feature scale.

    The encoding weights use squared Euclidean distances of the features as given (SpCL/MMT pass
    L2-normalised features, for which these lie in [0, 4]). For large N use
    ``KReciprocalEncoding.from_features(...).jaccard_graph(radius)``, which stays sparse.
    """
    encodings = KReciprocalEncoding.from_features(features, k1, k2)
    return encodings.jaccard_rows(np.arange(encodings.num))


def k_reciprocal_jaccard(dist: np.ndarray, k1: int, k2: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Jaccard distance between k-reciprocal encodings, for ``rows`` (default all) against all samples.

    ``dist`` is an [N, N] matrix of non-negative distances; it both ranks neighbours and weights them.
    """
    dist = np.asarray(dist)
    num = dist.shape[0]
    if dist.ndim != 2 or dist.shape[1] != num:
        raise ValueError(f"k-reciprocal encoding needs a square distance matrix, got shape {dist.shape}")
    source = _MatrixDistances(num, lambda start, stop: dist[start:stop], lambda r, c: dist[r, c])
    encodings = KReciprocalEncoding.build(source, k1, k2)
    return encodings.jaccard_rows(np.arange(num) if rows is None else np.asarray(rows))


class KReciprocalEncoding:
    """Sparse k-reciprocal encodings of N samples (after query expansion; each row sums to 1).

    Jaccard distances between them come out as dense rows (``jaccard_rows``) or as the sparse graph
    of the pairs within a radius (``jaccard_graph``); pairs whose encodings share nothing are at
    distance exactly 1 and never stored.
    """

    def __init__(self, encoding: sp.csr_matrix):
        self.encoding = encoding.tocsr()
        self.by_column = self.encoding.tocsc()
        self.num = self.encoding.shape[0]
        self._column_keys = None  # column-major (column, row) keys of the nonzeros, built when first needed

    @classmethod
    def from_features(cls, features, k1: int = 20, k2: int = 6) -> KReciprocalEncoding:
        """Encodings from squared Euclidean distances among ``features`` (what ``jaccard_distance`` uses)."""
        features = torch.as_tensor(features, dtype=torch.float32)
        if features.dim() != 2 or features.shape[0] < 2:
            raise ValueError(f"jaccard_distance needs [N, D] features with N >= 2, got shape {tuple(features.shape)}")
        return cls.build(_FeatureDistances(features), k1, k2)

    @classmethod
    def build(cls, source: _Distances, k1: int, k2: int, on_block: Callable | None = None) -> KReciprocalEncoding:
        num = source.num
        if not 1 <= k1 < num or not 1 <= k2 <= num:
            raise ValueError(f"k1={k1} and k2={k2} must satisfy 1 <= k1 < N and 1 <= k2 <= N for N={num} samples")
        nearest, nearest_dist = _nearest(source, max(k1 + 1, k2), on_block)
        encoding = _encode(nearest, _pair_lookup(source, nearest, nearest_dist), k1)
        if k2 > 1:
            # Query expansion: average the encodings of the k2 nearest neighbours (the sample included).
            expansion = sp.csr_matrix(
                (np.full(num * k2, 1 / k2, dtype=np.float32), nearest[:, :k2].ravel(),
                 np.arange(0, num * k2 + 1, k2)),
                shape=(num, num),
            )
            encoding = (expansion @ encoding).tocsr()
        return cls(encoding)

    def _min_sums(self, rows: np.ndarray, first_column: int = 0, columns: np.ndarray | None = None) -> np.ndarray:
        """Sum over j of min(V[row, j], V[other, j]) (the Jaccard numerator), float64 [len(rows), width]:
        for the others from ``first_column`` on, or for ``columns`` only (in that order)."""
        indptr, indices = self.by_column.indptr, self.by_column.indices
        block = self.encoding[rows].tocoo()
        # For every nonzero (r, j) of the block, every sample s >= first_column with a nonzero in
        # column j (a column's samples are sorted, so they form a tail of its segment).
        if first_column:
            if self._column_keys is None:
                self._column_keys = np.repeat(np.arange(self.num, dtype=np.int64), np.diff(indptr)) * self.num + indices
            begin = np.searchsorted(self._column_keys, block.col.astype(np.int64) * self.num + first_column)
        else:
            begin = indptr[block.col]
        lengths = indptr[block.col + 1] - begin
        offsets = np.repeat(begin - np.cumsum(lengths) + lengths, lengths)
        positions = offsets + np.arange(lengths.sum())
        block_rows = np.repeat(block.row.astype(np.int64), lengths)
        shared = np.minimum(np.repeat(block.data, lengths), self.by_column.data[positions])
        others = indices[positions] - first_column
        width = self.num - first_column
        if columns is not None:
            where = np.full(self.num, -1, dtype=np.int64)
            where[columns] = np.arange(len(columns))
            others = where[others]
            wanted = others >= 0
            block_rows, others, shared = block_rows[wanted], others[wanted], shared[wanted]
            width = len(columns)
        keys = block_rows * width + others
        return np.bincount(keys, shared, minlength=block.shape[0] * width).reshape(block.shape[0], width)

    def jaccard_rows(self, rows: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
        """Dense float32 [len(rows), len(columns)] Jaccard distances (columns default to all samples)."""
        rows = np.asarray(rows)
        out = np.empty((len(rows), self.num if columns is None else len(columns)), dtype=np.float32)
        for start in range(0, len(rows), _ROW_CHUNK):
            min_sum = self._min_sums(rows[start : start + _ROW_CHUNK], columns=columns)
            out[start : start + len(min_sum)] = np.clip(1 - min_sum / (2 - min_sum), 0, 1)
        return out

    def jaccard_graph(self, radius: float | None = None, upper: bool = False) -> sp.csr_matrix:
        """Sparse [N, N] float32 Jaccard distances of the pairs at most ``radius`` apart.

        ``radius=None`` keeps every pair whose encodings overlap (distance below 1); ``upper`` keeps
        only pairs i < j. Otherwise the graph is symmetric (the distance is: min and max are) and
        holds the diagonal; zero distances are stored explicitly, since for a precomputed sparse
        graph scikit-learn reads a stored entry as a neighbour and an absent one as none. Each pair
        is computed once, from the row block it falls in first.
        """
        rows_out, cols_out, data_out = [], [], []
        for start in range(0, self.num, _ROW_CHUNK):
            rows = np.arange(start, min(self.num, start + _ROW_CHUNK))
            min_sum = self._min_sums(rows, first_column=start)
            width = self.num - start
            min_sum[np.tril_indices(len(rows), 0 if upper else -1, width)] = 0  # pairs i < j (and i == j)
            flat = np.flatnonzero(min_sum > 0)
            shared = min_sum.ravel()[flat]
            distance = np.clip(1 - shared / (2 - shared), 0, 1).astype(np.float32)
            if radius is not None:
                within = distance <= radius
                flat, distance = flat[within], distance[within]
            rows_out.append((flat // width + start).astype(np.int32))
            cols_out.append((flat % width + start).astype(np.int32))
            data_out.append(distance)
        rows, cols, data = (np.concatenate(a) for a in (rows_out, cols_out, data_out))
        if not upper:
            off_diagonal = rows != cols
            rows, cols, data = (np.concatenate([a, b[off_diagonal]]) for a, b in
                                ((rows, cols), (cols, rows), (data, data)))
        order = np.lexsort((cols, rows))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=self.num))])
        return sp.csr_matrix((data[order], cols[order], indptr), shape=(self.num, self.num))


def _nearest(source: _Distances, k: int, on_block: Callable | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest samples, ties broken by index, and their distances ([N, k] each).

    Keeps k + 1 candidates per row while the blocks stream by: when the (k+1)-th equals the k-th, a tie
    straddles the cut and that row is ranked exactly by a stable sort of its full row instead.
    """
    num = source.num
    width = min(k + 1, num)
    best_dist = torch.full((num, width), torch.inf)
    best_index = torch.full((num, width), num, dtype=torch.long)
    row_max = torch.zeros(num) if source.scale_rows else None
    for start, stop, first_column, block in source.blocks():
        if on_block is not None:
            on_block(start, stop, first_column, block)
        values, indices = block.topk(min(width, block.shape[1]), dim=1, largest=False)
        _merge(best_dist, best_index, slice(start, stop), values.cpu(), indices.cpu() + first_column)
        if row_max is not None:
            row_max[start:stop] = torch.maximum(row_max[start:stop], block.amax(1).cpu())
        if source.symmetric and stop < num:
            tail = _transpose(block[:, stop - first_column :])
            values, indices = tail.topk(min(width, tail.shape[1]), dim=1, largest=False)
            _merge(best_dist, best_index, slice(stop, num), values.cpu(), indices.cpu() + start)
            if row_max is not None:
                row_max[stop:] = torch.maximum(row_max[stop:], tail.amax(1).cpu())
    if row_max is not None:
        source.row_scale = torch.where(row_max > 0, row_max, 1).numpy()

    # A tie straddles the cut when the (k+1)-th candidate is as near as the k-th (candidates are sorted).
    tied = np.arange(num) if width <= k else np.flatnonzero((best_dist[:, k] == best_dist[:, k - 1]).numpy())
    # Order each row's k nearest by (distance, index): sort by index, then stably by distance.
    best_dist, best_index = best_dist[:, :k], best_index[:, :k]
    by_index = best_index.argsort(dim=1)
    best_dist, best_index = best_dist.gather(1, by_index), best_index.gather(1, by_index)
    by_dist = torch.sort(best_dist, dim=1, stable=True).indices
    nearest, nearest_dist = best_index.gather(1, by_dist).numpy(), best_dist.gather(1, by_dist).numpy()
    for row in tied:
        values = source.row(int(row))
        order = np.argsort(values, kind="stable")[:k]
        nearest[row], nearest_dist[row] = order, values[order]
    return nearest, nearest_dist


def _transpose(block: torch.Tensor) -> torch.Tensor:
    """A contiguous transpose; on CPU NumPy's blocked copy is several times faster than torch's."""
    if block.device.type == "cpu":
        return torch.from_numpy(np.ascontiguousarray(block.numpy().T))
    return block.t().contiguous()


def _merge(best_dist, best_index, rows: slice, values, indices) -> None:
    """Keep the ``width`` smallest of a row range's candidates and the new ones."""
    width = best_dist.shape[1]
    merged_dist = torch.cat([best_dist[rows], values], dim=1)
    merged_index = torch.cat([best_index[rows], indices], dim=1)
    top, position = merged_dist.topk(width, dim=1, largest=False)
    best_dist[rows] = top
    best_index[rows] = merged_index.gather(1, position)


def _pair_lookup(source: _Distances, nearest: np.ndarray, nearest_dist: np.ndarray) -> Callable:
    """Distances of (row, col) pairs: from the neighbour lists where the pair is there, else computed."""

    def lookup(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        found = nearest[rows] == cols[:, None]
        known = found.any(axis=1)
        out = np.empty(len(rows), dtype=np.float32)
        out[known] = nearest_dist[rows[known], found[known].argmax(axis=1)]
        out[~known] = source.pairs(rows[~known], cols[~known])
        if source.row_scale is not None:
            out /= source.row_scale[rows]
        return out

    return lookup


def _reciprocal(nearest: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's k+1 nearest neighbours and a mask of those that rank it back in their k+1 nearest."""
    forward = nearest[:, : k + 1]
    backward = forward[forward]  # [N, k+1, k+1]: the neighbours' own neighbours
    is_reciprocal = (backward == np.arange(len(forward))[:, None, None]).any(axis=2)
    return forward, is_reciprocal


def _encode(nearest: np.ndarray, pair_dist: Callable, k1: int) -> sp.csr_matrix:
    """Sparse [N, N] k-reciprocal encodings: softmax(-dist) over each sample's expanded set."""
    num = len(nearest)
    half = int(np.around(k1 / 2))
    neighbours, is_neighbour = _reciprocal(nearest, k1)
    half_neighbours, is_half_neighbour = _reciprocal(nearest, half)
    keys = []
    for start in range(0, num, _ENCODE_ROWS):
        rows = slice(start, start + _ENCODE_ROWS)
        near, is_near = neighbours[rows], is_neighbour[rows]
        # A neighbour c's half-set joins the set of i when more than 2/3 of it already lies in the set.
        candidates = half_neighbours[near]  # [rows, k1+1, half+1]
        candidate_valid = is_half_neighbour[near] & is_near[:, :, None]
        in_set = (candidates[..., None] == near[:, None, None, :]) & is_near[:, None, None, :]
        overlap = (in_set.any(axis=3) & candidate_valid).sum(axis=2)
        accepted = overlap > 2 / 3 * candidate_valid.sum(axis=2)
        grown = candidate_valid & accepted[:, :, None]
        row_ids = np.arange(start, start + len(near), dtype=np.int64)
        pair_rows = np.concatenate(
            [np.broadcast_to(row_ids[:, None], near.shape)[is_near],
             np.broadcast_to(row_ids[:, None, None], candidates.shape)[grown]]
        )
        pair_cols = np.concatenate([near[is_near], candidates[grown]])
        keys.append(np.unique(pair_rows * num + pair_cols))
    keys = np.concatenate(keys)
    pair_rows, pair_cols = keys // num, keys % num
    pair_dist = pair_dist(pair_rows, pair_cols).astype(np.float64)
    # Numerically stable softmax per row: shift by the row's smallest distance in its set.
    row_min = np.full(num, np.inf)
    np.minimum.at(row_min, pair_rows, pair_dist)
    weights = np.exp(-(pair_dist - row_min[pair_rows]))
    weights /= np.bincount(pair_rows, weights, minlength=num)[pair_rows]
    return sp.csr_matrix((weights.astype(np.float32), (pair_rows, pair_cols)), shape=(num, num))


__all__ = ["KReciprocalEncoding", "jaccard_distance", "k_reciprocal_jaccard", "re_ranking", "re_ranking_features"]

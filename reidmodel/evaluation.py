"""Re-ID evaluation: feature extraction, distance matrices and the Market-1501 CMC / mAP / mINP protocol.

The ranking metrics follow torchreid's ``eval_market1501`` (and mINP from the AGW baseline). They only
depend on where each query's true matches rank among the gallery entries the protocol keeps, so no
gallery row is ever sorted: only entries no farther than the query's farthest match can precede one,
those are cut into histogram bins (a monotone map of the distance), the entries in bins below a match
are counted, and only the few entries that share a bin with a match are compared exactly. Queries are
processed in chunks, and ``evaluate_features`` computes each chunk's distances on the fly, so memory
stays bounded at MSMT17 scale (82k gallery images).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Working memory per (query, gallery) entry of a chunk, with room to spare: the float32 distances (the
# matmul writes into them; a matrix's rows are copied), a boolean mask, and the picked entries' indices,
# values and bins (a few percent of the entries for a useful model, all of them at worst). Chunks of
# queries are sized so that rows x gallery x this stays under the byte budget.
_BYTES_PER_ENTRY = 32
_DEFAULT_BYTE_BUDGET = 256 * 1024**2
# Bins per row between its smallest distance and its farthest match. More bins leave fewer entries to
# compare exactly but make the per-row histogram longer; 4096 keeps both small at Market/MSMT17 sizes.
_BINS = 4096
# Cap on bins per distance unit, for a row whose matches all sit at its smallest distance (span 0).
_MAX_SCALE = 1e30
_NORM_ROWS = 8192  # rows whose squared norms are computed at once (no full-size temporary)

JUNK_PID = -1


def compute_distance_matrix(
    qf: torch.Tensor, gf: torch.Tensor, metric: Literal["euclidean", "cosine"] = "euclidean"
) -> torch.Tensor:
    """Pairwise [Q, G] distances; Euclidean via the squared expansion, cosine as 1 - cos."""
    qf, gf = _check_features(qf, gf)
    return pairwise_distances(prepare_operand(qf, metric), prepare_operand(gf, metric), metric)


def prepare_operand(features: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What one side of ``pairwise_distances`` needs: (features, squared norms) or (unit features, None).

    Computed once for a gallery that many chunks of queries are compared against.
    """
    if metric == "euclidean":
        norms = torch.cat([features[s : s + _NORM_ROWS].pow(2).sum(1) for s in range(0, len(features), _NORM_ROWS)])
        return features, norms
    if metric == "cosine":
        return F.normalize(features, dim=1), None
    raise ValueError(f"unknown distance metric {metric!r}: use 'euclidean' or 'cosine'")


def pairwise_distances(query: tuple, gallery: tuple, metric: str, squared: bool = False) -> torch.Tensor:
    """[q, g] distances (or their squares) between two operands of ``prepare_operand``, in one buffer."""
    if metric == "euclidean":
        out = (query[1][:, None] + gallery[1][None, :]).addmm_(query[0], gallery[0].t(), alpha=-2)
        # Rounding makes some near-zero squared distances slightly negative; sqrt would give NaN.
        out.clamp_(min=0)
        return out if squared else out.sqrt_()
    out = (query[0] @ gallery[0].t()).neg_().add_(1)
    return out.pow_(2) if squared else out


def paired_distances(first: tuple, second: tuple, metric: str, squared: bool = False) -> torch.Tensor:
    """[n] distances between row i of one operand and row i of another (same formula, no matrix)."""
    dots = torch.einsum("nd,nd->n", first[0], second[0])
    if metric == "euclidean":
        out = (first[1] + second[1]).sub_(dots, alpha=2).clamp_(min=0)
        return out if squared else out.sqrt_()
    out = dots.neg_().add_(1)
    return out.pow_(2) if squared else out


def select_operand(operand: tuple, rows: torch.Tensor) -> tuple:
    """The rows ``rows`` of an operand of ``prepare_operand``."""
    return operand[0].index_select(0, rows), None if operand[1] is None else operand[1].index_select(0, rows)


@torch.no_grad()
def extract_features(model: nn.Module, loader, device: str | torch.device) -> torch.Tensor:
    """[N, D] float32 CPU features in loader order; the model's training mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        chunks = []
        for batch in loader:
            features = model(batch[0].to(device))
            if not isinstance(features, torch.Tensor) or features.dim() != 2:
                shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
                raise ValueError(f"model(images) in eval mode must return a [B, D] feature tensor, got {shape}")
            chunks.append(features.float().cpu())
    finally:
        model.train(was_training)
    if not chunks:
        raise ValueError("the loader yielded no batch: check that the dataset it reads is not empty")
    return torch.cat(chunks)


def evaluate_rank(
    distmat,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    *,
    max_rank: int = 50,
    byte_budget: int = _DEFAULT_BYTE_BUDGET,
) -> dict:
    """CMC, mAP and mINP under the Market-1501 protocol, from a [Q, G] distance matrix.

    Per query, gallery entries with the same pid and camera are removed (they are trivially easy),
    junk (pid -1) is removed, distractors (pid 0) stay as negatives, and a query with no remaining
    match is skipped. Ties in distance are broken by gallery index (as a stable sort would). Queries
    are ranked in chunks whose working memory stays under ``byte_budget`` bytes (256 MiB by default:
    about 500 queries against Market's 15913 gallery images). Callers holding features rather than a
    matrix should use ``evaluate_features``, which never builds the matrix.
    """
    if isinstance(distmat, torch.Tensor):
        distmat = distmat.detach()
    else:
        distmat = torch.from_numpy(np.asarray(distmat))
    if not distmat.is_floating_point():
        distmat = distmat.double()  # exact for the integers a caller could pass
    elif distmat.dtype in (torch.float16, torch.bfloat16):
        distmat = distmat.float()
    if distmat.dim() != 2:
        raise ValueError(f"distmat must be a [num_query, num_gallery] matrix, got shape {tuple(distmat.shape)}")
    ids = _check_ids((q_pids, g_pids, q_camids, g_camids), distmat.shape, ("distmat rows", "distmat columns"))
    return _evaluate(lambda rows: distmat.index_select(0, rows.to(distmat.device)), ids, max_rank=max_rank,
                     byte_budget=byte_budget)


def evaluate_features(
    qf,
    gf,
    q_pids,
    g_pids,
    q_camids,
    g_camids,
    *,
    max_rank: int = 50,
    metric: Literal["euclidean", "cosine"] = "euclidean",
    byte_budget: int = _DEFAULT_BYTE_BUDGET,
) -> dict:
    """``evaluate_rank`` of ``compute_distance_matrix(qf, gf, metric)`` without building that matrix.

    Each chunk of queries gets its distances from one float32 matmul against the gallery, on the
    features' device, and is ranked at once; peak memory is the features plus ``byte_budget``. The
    numbers equal ``evaluate_rank`` of the full matrix, up to the last bit of the matmul (a BLAS may
    round a chunk of rows differently from the full product), which only matters for exact ties.
    """
    qf, gf = _check_features(qf, gf)
    ids = _check_ids((q_pids, g_pids, q_camids, g_camids), (len(qf), len(gf)),
                     ("query features", "gallery features"))
    gallery = prepare_operand(gf, metric)

    def rows(indices: torch.Tensor) -> torch.Tensor:
        return pairwise_distances(prepare_operand(qf[indices.to(qf.device)], metric), gallery, metric)

    return _evaluate(rows, ids, max_rank=max_rank, byte_budget=byte_budget)


def _check_features(qf, gf) -> tuple[torch.Tensor, torch.Tensor]:
    qf = torch.as_tensor(qf, dtype=torch.float32)
    gf = torch.as_tensor(gf, dtype=torch.float32, device=qf.device)
    if qf.dim() != 2 or gf.dim() != 2 or qf.shape[1] != gf.shape[1]:
        raise ValueError(
            f"features must be [Q, D] and [G, D] with the same D, got {tuple(qf.shape)} and {tuple(gf.shape)}"
        )
    return qf, gf


def _check_ids(ids: tuple, shape: tuple[int, int], names: tuple[str, str]) -> tuple[np.ndarray, ...]:
    """(q_pids, g_pids, q_camids, g_camids) as int64 arrays, checked against ``shape`` = (queries, gallery);
    ``names`` say what the query and gallery sizes come from, for the error message."""
    q_pids, g_pids, q_camids, g_camids = (as_numpy(values).astype(np.int64) for values in ids)
    (num_q, num_g), (q_name, g_name) = shape, names
    if q_pids.shape != (num_q,) or q_camids.shape != (num_q,):
        raise ValueError(f"q_pids and q_camids must have length {num_q} ({q_name}), got "
                         f"{q_pids.shape} and {q_camids.shape}")
    if g_pids.shape != (num_g,) or g_camids.shape != (num_g,):
        raise ValueError(f"g_pids and g_camids must have length {num_g} ({g_name}), got "
                         f"{g_pids.shape} and {g_camids.shape}")
    if num_g == 0:
        raise ValueError("the gallery is empty: evaluate against a non-empty gallery")
    return q_pids, g_pids, q_camids, g_camids


def _evaluate(rows_of, ids: tuple[np.ndarray, ...], *, max_rank: int, byte_budget: int) -> dict:
    """Metrics from ``rows_of(query indices) -> [len, G] distances``, over chunks of the valid queries."""
    if max_rank < 1:
        raise ValueError(f"max_rank={max_rank} must be >= 1")
    q_pids, g_pids, q_camids, g_camids = ids
    num_q, num_g = len(q_pids), len(g_pids)
    pairs = _SamePidPairs(*ids)
    valid = np.flatnonzero(pairs.num_matches > 0)
    if len(valid) == 0:
        raise ValueError("no query has a valid gallery match (same pid, other camera): check the query/gallery split")
    junk = torch.from_numpy(np.flatnonzero(g_pids == JUNK_PID))
    chunk = max(1, byte_budget // (num_g * _BYTES_PER_ENTRY))
    cmc_hits = np.zeros(max_rank + 1, dtype=np.int64)
    ap_sum = inp_sum = 0.0
    query_ap = np.full(num_q, np.nan)
    for start in range(0, len(valid), chunk):
        queries = valid[start : start + chunk]
        dist = rows_of(torch.from_numpy(queries))
        rows, ranks = _match_ranks(dist, pairs.chunk(queries), junk)
        # Rows with a non-finite match or a -inf entry are ranked by a stable sort of the row instead,
        # exactly as before; they only appear with diverged features.
        for row in np.setdiff1d(np.arange(len(queries)), rows):
            query = queries[row]
            row_ranks = _sorted_ranks(as_numpy(dist[row]), q_pids[query], q_camids[query], g_pids, g_camids)
            rows = np.concatenate([rows, np.full(len(row_ranks), row)])
            ranks = np.concatenate([ranks, row_ranks])
        first, ap, inp = _row_metrics(rows, ranks, len(queries))
        cmc_hits += np.bincount(np.minimum(first, max_rank + 1) - 1, minlength=max_rank + 1)
        ap_sum += ap.sum()
        query_ap[queries] = ap
        inp_sum += inp.sum()
    num_valid = len(valid)
    # Ranks beyond the gallery size count like the last rank, which is a hit for a valid query.
    return {
        "cmc": np.cumsum(cmc_hits[:max_rank]) / num_valid,
        "mAP": float(ap_sum / num_valid),
        "mINP": float(inp_sum / num_valid),
        "query_ap": query_ap,  # per query, NaN for one skipped (no valid match): DEV weighs them
        "num_valid_queries": num_valid,
        "num_skipped_queries": num_q - num_valid,
    }


class _SamePidPairs:
    """Every (query, gallery) pair with the same pid: the query's matches (other camera, not junk) and
    the entries the protocol removes (same camera). Sorted by query, then gallery index."""

    def __init__(self, q_pids, g_pids, q_camids, g_camids):
        order = np.argsort(g_pids, kind="stable")
        sorted_pids = g_pids[order]
        first = np.searchsorted(sorted_pids, q_pids, "left")
        counts = np.searchsorted(sorted_pids, q_pids, "right") - first
        self.rows = np.repeat(np.arange(len(q_pids)), counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        self.cols = order[np.repeat(first, counts) + within]
        self.is_match = (g_camids[self.cols] != q_camids[self.rows]) & (q_pids[self.rows] != JUNK_PID)
        self.num_matches = np.bincount(self.rows[self.is_match], minlength=len(q_pids))
        self.ptr = np.concatenate([[0], np.cumsum(counts)])
        self.num_queries = len(q_pids)

    def chunk(self, queries: np.ndarray) -> _ChunkPairs:
        """The pairs of ``queries`` (ascending), rows local to them."""
        span = slice(self.ptr[queries[0]], self.ptr[queries[-1] + 1])
        local = np.full(self.num_queries, -1)
        local[queries] = np.arange(len(queries))
        rows, cols, is_match = local[self.rows[span]], self.cols[span], self.is_match[span]
        inside = rows >= 0
        match, removed = inside & is_match, inside & ~is_match
        picked = (rows[match], cols[match], rows[removed], cols[removed])
        return _ChunkPairs(*(torch.from_numpy(a) for a in picked))


class _ChunkPairs(NamedTuple):
    """A chunk's (row, col) of the matches and of the entries the protocol removes, rows local to it."""

    match_rows: torch.Tensor
    match_cols: torch.Tensor
    removed_rows: torch.Tensor
    removed_cols: torch.Tensor


class _Entries(NamedTuple):
    """Entries of a chunk's distance rows as NumPy arrays: row, gallery column, distance."""

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray

    def select(self, keep: np.ndarray) -> _Entries:
        return _Entries(self.rows[keep], self.cols[keep], self.values[keep])


class _Bins(NamedTuple):
    """Per row, histogram bins from its smallest distance (``low``) on, ``scale`` bins per distance unit."""

    low: np.ndarray
    scale: np.ndarray

    def of(self, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Flat bin (row * _BINS + bin), monotone in the value within a row; for entries and matches alike."""
        positions = np.clip((values - self.low[rows]) * self.scale[rows], 0, _BINS - 1)
        return positions.astype(np.int64) + rows * _BINS


def _match_ranks(dist, pairs: _ChunkPairs, junk):
    """(row, rank) NumPy arrays for every match of the rows ranked here; ``dist`` is overwritten.

    The rank is 1-based among the gallery entries the protocol keeps, ties broken by gallery index.
    Only entries no farther than a row's farthest match can precede a match, so those are picked out
    first (a small share of the row for a useful model) and handled in NumPy: they are binned between
    the row's smallest distance and its farthest match, the bins below each match's bin are counted,
    and the entries in a match's own bin are ordered exactly. NaN entries are never picked, which
    ranks them last as a sort would; a row with a non-finite match or a -inf entry is left out (the
    caller sorts it).
    """
    matches = _match_entries(dist, pairs)
    high = np.full(len(dist), -np.inf, dtype=matches.values.dtype)
    np.maximum.at(high, matches.rows, matches.values)
    entries = _entries_up_to(dist, high, pairs, junk)
    bins, finite = _row_bins(entries, high)
    if not finite.all():
        entries, matches = entries.select(finite[entries.rows]), matches.select(finite[matches.rows])
    return _ranks_in_bins(entries, matches, bins, dist.shape[1])


def _match_entries(dist, pairs: _ChunkPairs) -> _Entries:
    """The matches and their distances, read before ``_entries_up_to`` overwrites entries."""
    rows, cols = pairs.match_rows.numpy(), pairs.match_cols.numpy()
    flat = torch.from_numpy(rows * dist.shape[1] + cols).to(dist.device)
    return _Entries(rows, cols, torch.take(dist, flat).cpu().numpy())


def _entries_up_to(dist, high: np.ndarray, pairs: _ChunkPairs, junk) -> _Entries:
    """The entries no farther than their row's ``high`` (row-major, columns ascending): the only ones that
    can precede a match. Removed entries are set to inf first, past every finite match and every count."""
    device, num_g = dist.device, dist.shape[1]
    if len(junk):
        dist.index_fill_(1, junk.to(device), torch.inf)
    dist.view(-1).index_fill_(0, (pairs.removed_rows * num_g + pairs.removed_cols).to(device), torch.inf)
    flat = _flat_nonzero(dist <= torch.from_numpy(high).to(device)[:, None])
    values = torch.take(dist, flat).cpu().numpy()
    flat = flat.cpu().numpy()
    rows = flat // num_g
    return _Entries(rows, flat - rows * num_g, values)


def _row_bins(entries: _Entries, high: np.ndarray) -> tuple[_Bins, np.ndarray]:
    """Each row's bins between its smallest picked distance and ``high``, and whether both ends are finite
    (a row that is not must be sorted instead)."""
    num_rows, dtype = len(high), entries.values.dtype
    counts = np.bincount(entries.rows, minlength=num_rows)
    low = np.full(num_rows, np.inf, dtype=dtype)
    picked = counts > 0  # the row's smallest distance is always picked, unless the row is left out
    low[picked] = np.minimum.reduceat(entries.values, (np.cumsum(counts) - counts)[picked])
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        span = high - low
        finite = np.isfinite(low) & np.isfinite(high) & np.isfinite(span)
        scale = np.minimum((_BINS - 1) / np.where(finite, span, 1), _MAX_SCALE).astype(dtype)
    return _Bins(np.where(finite, low, 0).astype(dtype), scale), finite


def _ranks_in_bins(entries: _Entries, matches: _Entries, bins: _Bins, num_g: int) -> tuple[np.ndarray, ...]:
    """(row, rank) of the matches: entries in lower bins are counted, those sharing a match's bin ordered."""
    num_rows = len(bins.low)
    flat_bins = bins.of(entries.rows, entries.values)
    # Entries up to each flat bin, inclusive.
    below = np.cumsum(np.bincount(flat_bins, minlength=num_rows * _BINS))
    shares_bin = np.zeros(num_rows * _BINS, dtype=bool)
    shares_bin[bins.of(matches.rows, matches.values)] = True
    tied = np.flatnonzero(shares_bin[flat_bins])
    entries, flat_bins = entries.select(tied), flat_bins[tied]
    order = np.lexsort((entries.cols, entries.values, entries.rows))  # by row, distance, gallery index
    rows, cols, flat_bins = entries.rows[order], entries.cols[order], flat_bins[order]
    position = np.arange(len(rows))
    starts = np.ones(len(rows), dtype=bool)
    starts[1:] = flat_bins[1:] != flat_bins[:-1]  # a bin index holds its row
    group_start = np.maximum.accumulate(np.where(starts, position, 0))
    is_match = np.isin(rows * num_g + cols, matches.rows * num_g + matches.cols)
    # Entries in the row's lower bins (the flat counts before this bin, less those before the row) + the
    # entries before this one in its own bin + itself.
    before_bin = below[flat_bins - 1] - np.where(rows > 0, below[rows * _BINS - 1], 0)
    before_bin = np.where(flat_bins % _BINS > 0, before_bin, 0)
    ranks = before_bin + (position - group_start) + 1
    return rows[is_match], ranks[is_match]


def _flat_nonzero(mask: torch.Tensor) -> torch.Tensor:
    """Flat indices of the True entries, ascending (NumPy's is several times faster than torch's on CPU)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return mask.view(-1).nonzero().squeeze(1)


def _sorted_ranks(row: np.ndarray, q_pid, q_camid, g_pids, g_camids) -> np.ndarray:
    """Ranks of a query's matches by a stable sort of its distance row (the protocol written out)."""
    order = np.argsort(row, kind="stable")
    pids = g_pids[order]
    same_pid = pids == q_pid
    keep = ~((same_pid & (g_camids[order] == q_camid)) | (pids == JUNK_PID))
    return np.cumsum(keep)[same_pid & keep]


def _row_metrics(rows: np.ndarray, ranks: np.ndarray, num_rows: int):
    """First-match rank, AP and INP per row from (row, rank) pairs; every row has at least one match."""
    order = np.lexsort((ranks, rows))
    rows, ranks = rows[order], ranks[order].astype(np.int64)
    counts = np.bincount(rows, minlength=num_rows)
    starts = np.cumsum(counts) - counts
    hits = np.arange(1, len(rows) + 1) - starts[rows]  # matches up to and including this one
    ap = np.bincount(rows, hits / ranks, minlength=num_rows) / counts
    inp = counts / ranks[starts + counts - 1]
    return ranks[starts], ap, inp


def as_numpy(values) -> np.ndarray:
    """Arrays and (CPU or GPU) tensors alike as a NumPy array, so metrics accept either."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


__all__ = [
    "as_numpy",
    "compute_distance_matrix",
    "evaluate_features",
    "evaluate_rank",
    "extract_features",
    "paired_distances",
    "pairwise_distances",
    "prepare_operand",
    "select_operand",
]

"""Re-ID evaluation: feature extraction, distance matrices and the Market-1501 CMC / mAP / mINP protocol.

The ranking metrics follow torchreid's ``eval_market1501`` (and mINP from the AGW baseline) but are
vectorised over chunks of queries instead of looping over them in Python.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Peak working memory per (query, gallery) entry while a chunk is ranked, measured with tracemalloc:
# the int64 argsort, gathered int32 pids and camids, boolean masks, int32 cumulative counts and the
# float64 precisions. Chunks of queries are sized so that rows x gallery x this stays under the budget.
_BYTES_PER_ENTRY = 48
_DEFAULT_BYTE_BUDGET = 256 * 1024**2

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


def as_numpy(values) -> np.ndarray:
    """Arrays and (CPU or GPU) tensors alike as a NumPy array, so metrics accept either."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


__all__ = ["as_numpy", "compute_distance_matrix", "evaluate_rank", "extract_features"]

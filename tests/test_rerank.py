import numpy as np
import pytest
import torch

import reidmodel.rerank as rerank
from reidmodel.evaluation import compute_distance_matrix
from reidmodel.rerank import (
    KReciprocalEncoding,
    jaccard_distance,
    k_reciprocal_jaccard,
    re_ranking,
    re_ranking_features,
)


def _slow_jaccard(original_dist, k1, k2):
    """Line-by-line port of the loops of Zhong et al.'s reference code (stable argsort for ties)."""
    all_num = original_dist.shape[0]
    initial_rank = np.argsort(original_dist, axis=1, kind="stable")
    V = np.zeros_like(original_dist, dtype=np.float64)
    half = int(np.around(k1 / 2.0))
    for i in range(all_num):
        forward = initial_rank[i, : k1 + 1]
        backward = initial_rank[forward, : k1 + 1]
        k_reciprocal_index = forward[np.where(backward == i)[0]]
        expansion = k_reciprocal_index
        for candidate in k_reciprocal_index:
            cand_forward = initial_rank[candidate, : half + 1]
            cand_backward = initial_rank[cand_forward, : half + 1]
            cand_reciprocal = cand_forward[np.where(cand_backward == candidate)[0]]
            if len(np.intersect1d(cand_reciprocal, k_reciprocal_index)) > 2.0 / 3 * len(cand_reciprocal):
                expansion = np.append(expansion, cand_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-original_dist[i, expansion])
        V[i, expansion] = weight / np.sum(weight)
    if k2 != 1:
        V = np.stack([V[initial_rank[i, :k2], :].mean(axis=0) for i in range(all_num)])
    jaccard = np.zeros_like(V)
    for i in range(all_num):
        temp_min = np.zeros(all_num)
        for j in np.where(V[i] != 0)[0]:
            images = np.where(V[:, j] != 0)[0]
            temp_min[images] += np.minimum(V[i, j], V[images, j])
        jaccard[i] = 1 - temp_min / (2.0 - temp_min)
    return jaccard


def _slow_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value):
    original_dist = np.concatenate(
        [np.concatenate([q_q_dist, q_g_dist], axis=1), np.concatenate([q_g_dist.T, g_g_dist], axis=1)], axis=0
    )
    original_dist = np.power(original_dist, 2).astype(np.float32)
    original_dist = np.transpose(1.0 * original_dist / np.max(original_dist, axis=0))
    num_q = q_g_dist.shape[0]
    jaccard = _slow_jaccard(original_dist, k1, k2)
    final = jaccard * (1 - lambda_value) + original_dist * lambda_value
    return final[:num_q, num_q:]


def _blobs(seed=0, per_cluster=8, clusters=4, dim=6, spread=0.3):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)) * 4
    x = np.concatenate([c + spread * rng.normal(size=(per_cluster, dim)) for c in centers])
    return x.astype(np.float32), np.repeat(np.arange(clusters), per_cluster)


def _cdist(a, b):
    return torch.cdist(torch.from_numpy(a).double(), torch.from_numpy(b).double()).numpy()


@pytest.mark.parametrize("k1,k2", [(6, 3), (5, 1), (4, 2)])
def test_re_ranking_equals_slow_reference(k1, k2):
    x, _ = _blobs(seed=k1)
    q, g = x[::3], np.delete(x, np.s_[::3], axis=0)
    q_g, q_q, g_g = _cdist(q, g), _cdist(q, q), _cdist(g, g)
    fast = re_ranking(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=0.3)
    slow = _slow_re_ranking(q_g, q_q, g_g, k1, k2, 0.3)
    assert fast.shape == (len(q), len(g))
    np.testing.assert_allclose(fast, slow, atol=1e-5)


def test_re_ranking_ties_equal_slow_reference():
    rng = np.random.default_rng(3)
    n = 18
    upper = np.triu(rng.integers(1, 4, size=(n, n)), 1).astype(np.float64)
    full = upper + upper.T  # integer distances, many ties, zero diagonal
    q_idx, g_idx = np.arange(6), np.arange(6, n)
    fast = re_ranking(full[np.ix_(q_idx, g_idx)], full[np.ix_(q_idx, q_idx)], full[np.ix_(g_idx, g_idx)],
                      k1=5, k2=3)
    slow = _slow_re_ranking(full[np.ix_(q_idx, g_idx)], full[np.ix_(q_idx, q_idx)], full[np.ix_(g_idx, g_idx)],
                            5, 3, 0.3)
    np.testing.assert_allclose(fast, slow, atol=1e-5)


def test_re_ranking_symmetric_setting_and_lambda_one():
    x, labels = _blobs(seed=1)
    d = _cdist(x, x)
    # The Jaccard part is symmetric: swapping the roles of query and gallery transposes it.
    q, g = x[:12], x[12:]
    jaccard_qg = re_ranking(_cdist(q, g), _cdist(q, q), _cdist(g, g), k1=6, k2=3, lambda_value=0.0)
    jaccard_gq = re_ranking(_cdist(g, q), _cdist(g, g), _cdist(q, q), k1=6, k2=3, lambda_value=0.0)
    np.testing.assert_allclose(jaccard_qg, jaccard_gq.T, atol=1e-6)
    # Query set == gallery set: each sample is closest to its own copy.
    reranked = re_ranking(d, d, d, k1=6, k2=3)
    assert (reranked.argmin(axis=1) == np.arange(len(x))).all()
    # lambda = 1 keeps only the (row-normalised, squared) original distance.
    only_original = re_ranking(d, d, d, k1=6, k2=3, lambda_value=1.0)
    np.testing.assert_allclose(only_original, d**2 / (d**2).max(axis=1, keepdims=True), atol=1e-6)
    # Re-ranking keeps same-cluster pairs closer than cross-cluster pairs.
    same = labels[:, None] == labels[None, :]
    assert reranked[same].max() < reranked[~same].min()


def test_re_ranking_accepts_tensors():
    x, _ = _blobs(seed=2)
    d = _cdist(x, x)
    np.testing.assert_allclose(
        re_ranking(torch.from_numpy(d), torch.from_numpy(d), torch.from_numpy(d), k1=6, k2=3),
        re_ranking(d, d, d, k1=6, k2=3),
    )


def test_jaccard_distance_properties_and_reference():
    x, labels = _blobs(seed=4, per_cluster=10)
    jac = jaccard_distance(torch.from_numpy(x), k1=6, k2=3)
    assert jac.shape == (len(x), len(x))
    np.testing.assert_allclose(np.diag(jac), 0, atol=1e-6)
    assert jac.min() >= 0 and jac.max() <= 1
    np.testing.assert_allclose(jac, jac.T, atol=1e-6)
    same = labels[:, None] == labels[None, :]
    assert jac[same].max() < jac[~same].min()
    # Well-separated clusters share no neighbours at all.
    np.testing.assert_allclose(jac[~same], 1.0)
    np.testing.assert_allclose(jac, np.clip(_slow_jaccard(_cdist(x, x) ** 2, 6, 3), 0, 1), atol=1e-5)
    # The same numbers from numpy input, and independent of a global rescaling of the feature space
    # only through the ranking (weights change, the [0, 1] range does not).
    np.testing.assert_allclose(jaccard_distance(x, k1=6, k2=3), jac)
    assert jaccard_distance(100 * x, k1=6, k2=3).max() <= 1


def test_bad_inputs_raise_one_line_errors():
    d = np.zeros((4, 5))
    with pytest.raises(ValueError, match="q_q_dist"):
        re_ranking(d, np.zeros((3, 3)), np.zeros((5, 5)))
    with pytest.raises(ValueError, match="k1"):
        k_reciprocal_jaccard(np.zeros((5, 5)), k1=5, k2=2)
    with pytest.raises(ValueError, match="N >= 2"):
        jaccard_distance(np.zeros((1, 3)))


def _integer_features(seed, n=300, dim=4):
    """Small integer coordinates: exact float32 distances, and ties everywhere."""
    return np.random.default_rng(seed).integers(0, 3, size=(n, dim)).astype(np.float32)


@pytest.mark.parametrize("integer", [False, True])
def test_feature_encoding_equals_the_matrix_one(integer, monkeypatch):
    # Many small blocks: every row gets candidates from its own block and from earlier blocks' transposes.
    monkeypatch.setattr(rerank, "_BLOCK_BYTES", 4 * 300 * 37)
    x = _integer_features(0) if integer else np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    squared = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    if integer:  # exact: the same neighbours, ties broken by index, and the same weights
        np.testing.assert_array_equal(jaccard_distance(x, 20, 6), k_reciprocal_jaccard(squared, 20, 6))
    else:
        np.testing.assert_allclose(jaccard_distance(x, 20, 6), k_reciprocal_jaccard(squared, 20, 6), atol=1e-5)


def test_nearest_neighbours_break_ties_by_index(monkeypatch):
    monkeypatch.setattr(rerank, "_BLOCK_BYTES", 4 * 200 * 23)
    x = _integer_features(1, n=200, dim=2)  # 9 distinct points: every row is full of ties
    squared = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    nearest, nearest_dist = rerank._nearest(rerank._FeatureDistances(torch.from_numpy(x)), 21)
    expected = np.argsort(squared, axis=1, kind="stable")[:, :21]
    np.testing.assert_array_equal(nearest, expected)
    np.testing.assert_array_equal(nearest_dist, np.take_along_axis(squared, expected, axis=1))


@pytest.mark.parametrize("radius", [0.3, 0.6, 0.95])
def test_sparse_graph_holds_exactly_the_pairs_within_the_radius(radius):
    for x in (_integer_features(2), np.random.default_rng(2).normal(size=(300, 8)).astype(np.float32)):
        encoding = KReciprocalEncoding.from_features(x, 20, 6)
        dense = encoding.jaccard_rows(np.arange(len(x)))
        graph = encoding.jaccard_graph(radius)
        stored = np.zeros(dense.shape, dtype=bool)
        coo = graph.tocoo()
        stored[coo.row, coo.col] = True
        np.testing.assert_array_equal(stored, dense <= radius)  # zeros (the diagonal) stored explicitly
        np.testing.assert_array_equal(graph.toarray(), np.where(dense <= radius, dense, 0))
        assert graph.has_sorted_indices
        # Without a radius: every overlapping pair i < j (a tiny overlap may still round to distance 1).
        upper = encoding.jaccard_graph(upper=True).tocoo()
        assert (upper.row < upper.col).all()
        np.testing.assert_array_equal(upper.data, dense[upper.row, upper.col])
        assert upper.nnz >= np.triu(dense < 1, 1).sum()


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_re_ranking_features_equals_the_matrix_version(metric, monkeypatch):
    monkeypatch.setattr(rerank, "_BLOCK_BYTES", 4 * 150 * 29)
    rng = np.random.default_rng(5)
    q, g = rng.normal(size=(40, 8)).astype(np.float32), rng.normal(size=(110, 8)).astype(np.float32)
    matrices = [compute_distance_matrix(a, b, metric).numpy() for a, b in ((q, g), (q, q), (g, g))]
    expected = re_ranking(*matrices, k1=10, k2=3, lambda_value=0.3)
    result = re_ranking_features(torch.from_numpy(q), torch.from_numpy(g), k1=10, k2=3, metric=metric)
    assert result.shape == (40, 110) and result.dtype == np.float32
    np.testing.assert_allclose(result, expected, atol=1e-5)
    with pytest.raises(ValueError, match="same D"):
        re_ranking_features(q, g[:, :3])

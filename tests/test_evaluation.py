import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist as scipy_cdist
from torch import nn

from benchmarks.scale import classic_loop  # torchreid's eval_market1501 loop, with AGW's mINP
from reidmodel.evaluation import compute_distance_matrix, evaluate_features, evaluate_rank, extract_features


def _sorted_reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """The previous evaluate_rank: a stable argsort of every row, vectorised over all queries."""
    order = np.argsort(distmat, axis=1, kind="stable")
    ranked_pids = g_pids[order]
    same_pid = ranked_pids == q_pids[:, None]
    keep = ~((same_pid & (g_camids[order] == q_camids[:, None])) | (ranked_pids == -1))
    matches = same_pid & keep
    num_matches = matches.sum(1)
    valid = num_matches > 0
    keep, matches, num_matches = keep[valid], matches[valid], num_matches[valid]
    kept_rank = np.cumsum(keep, axis=1)
    hits = np.cumsum(matches, axis=1)
    match_ranks = np.where(matches, kept_rank, 0)
    first_rank = np.where(matches, kept_rank, np.iinfo(np.int64).max).min(1)
    cmc = (first_rank[:, None] <= np.arange(1, max_rank + 1)[None, :]).mean(0)
    precision = np.divide(hits, match_ranks, out=np.zeros(hits.shape), where=matches)
    return {"cmc": cmc, "mAP": (precision.sum(1) / num_matches).mean(),
            "mINP": (num_matches / match_ranks.max(1)).mean(), "num_valid_queries": int(valid.sum())}


def _assert_same(result, expected, tol=1e-9):
    np.testing.assert_allclose(result["cmc"], expected["cmc"], rtol=0, atol=tol)
    assert result["mAP"] == pytest.approx(expected["mAP"], abs=tol)
    assert result["mINP"] == pytest.approx(expected["mINP"], abs=tol)
    assert result["num_valid_queries"] == expected["num_valid_queries"]


def _random_case(seed, num_q=40, num_g=120, num_ids=15, integer=False):
    rng = np.random.default_rng(seed)
    q_pids = rng.integers(1, num_ids, num_q)
    g_pids = rng.integers(-1, num_ids, num_g)  # includes junk (-1) and distractors (0)
    q_camids, g_camids = rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)
    q_pids[0] = num_ids + 5  # a query without any gallery match
    if integer:
        distmat = rng.integers(0, 4, (num_q, num_g)).astype(np.float32)  # many ties
    else:
        distmat = rng.random((num_q, num_g), dtype=np.float32)
    return distmat, q_pids, g_pids, q_camids, g_camids


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_loop(seed, integer):
    case = _random_case(seed, integer=integer)
    reference = classic_loop(*case, max_rank=20)
    result = evaluate_rank(*case, max_rank=20)
    np.testing.assert_allclose(result["cmc"], reference["cmc"], atol=1e-6)
    assert result["mAP"] == pytest.approx(reference["mAP"], abs=1e-6)
    assert result["mINP"] == pytest.approx(reference["mINP"], abs=1e-6)
    assert result["num_valid_queries"] == reference["num_valid_queries"]
    assert result["num_skipped_queries"] == len(case[1]) - reference["num_valid_queries"] >= 1
    # Per query: NaN for the skipped ones (query 0 has no match), the mean of the others is the mAP.
    assert np.isnan(result["query_ap"][0]) and np.isnan(result["query_ap"]).sum() == result["num_skipped_queries"]
    assert np.nanmean(result["query_ap"]) == pytest.approx(result["mAP"], abs=1e-12)
    # One query per chunk gives the same numbers as the default chunking.
    tiny = evaluate_rank(*case, max_rank=20, byte_budget=1)
    np.testing.assert_allclose(tiny["cmc"], result["cmc"], atol=1e-12)
    assert tiny["mAP"] == pytest.approx(result["mAP"], abs=1e-12)


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_histogram_ranking_equals_full_sort(integer, dtype):
    # Tie-free and tie-heavy (distances 0..3) matrices, larger galleries, junk and distractors.
    for seed in range(8):
        distmat, *ids = _random_case(10 + seed, num_q=30 + seed, num_g=400 + 50 * seed, num_ids=6 + seed,
                                     integer=integer)
        expected = _sorted_reference(distmat.astype(dtype), *ids, max_rank=30)
        for budget in (1, 10_000, 256 * 1024**2):  # one query per chunk, a few, all at once
            _assert_same(evaluate_rank(distmat.astype(dtype), *ids, max_rank=30, byte_budget=budget), expected)


def test_non_finite_rows_rank_as_a_stable_sort_would():
    distmat, *ids = _random_case(3, num_q=12, num_g=80, num_ids=5)
    distmat[1, 4] = np.nan
    distmat[2, :] = np.inf
    distmat[3, 7] = -np.inf
    distmat[4, :10] = np.inf
    _assert_same(evaluate_rank(distmat, *ids, max_rank=10), _sorted_reference(distmat, *ids, max_rank=10))


def _features_case(seed, integer, num_q=25, num_g=300, num_ids=8, dim=6):
    rng = np.random.default_rng(seed)
    _, q_pids, g_pids, q_camids, g_camids = _random_case(seed, num_q, num_g, num_ids)
    if integer:  # small integers: distances exact in float32 and full of ties
        qf, gf = rng.integers(0, 3, (num_q, dim)), rng.integers(0, 3, (num_g, dim))
    else:
        qf, gf = rng.normal(size=(num_q, dim)), rng.normal(size=(num_g, dim))
    return (torch.tensor(qf, dtype=torch.float32), torch.tensor(gf, dtype=torch.float32),
            q_pids, g_pids, q_camids, g_camids)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("integer", [False, True])
def test_features_equal_the_matrix_path(metric, integer):
    if integer and metric == "cosine":
        pytest.skip("cosine of integer vectors is not exact in float32")
    for seed in range(4):
        qf, gf, *ids = _features_case(seed, integer)
        distmat = compute_distance_matrix(qf, gf, metric)
        expected = _sorted_reference(distmat.numpy(), *ids, max_rank=20)
        _assert_same(evaluate_rank(distmat, *ids, max_rank=20), expected)
        for budget in (1, 50_000, 256 * 1024**2):
            _assert_same(evaluate_features(qf, gf, *ids, max_rank=20, metric=metric, byte_budget=budget), expected)


def test_features_bad_inputs_raise():
    qf, gf, q_pids, g_pids, q_camids, g_camids = _features_case(0, False)
    with pytest.raises(ValueError, match="same D"):
        evaluate_features(qf, gf[:, :3], q_pids, g_pids, q_camids, g_camids)
    with pytest.raises(ValueError, match="q_pids"):
        evaluate_features(qf, gf, q_pids[:-1], g_pids, q_camids, g_camids)
    with pytest.raises(ValueError, match="unknown distance metric"):
        evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, metric="manhattan")


def test_hand_computed_single_query():
    # Gallery listed out of rank order; ranked by distance it reads:
    # g3 pid 2 (negative), g0 pid 1 cam 0 (same camera: removed), g5 pid 1 cam 1 (match),
    # g1 junk (removed), g6 pid 1 cam 2 (match), g2 distractor pid 0, g4 pid 1 cam 3 (match).
    distmat = np.array([[0.2, 0.4, 0.6, 0.1, 0.7, 0.3, 0.5]])
    g_pids = np.array([1, -1, 0, 2, 1, 1, 1])
    g_camids = np.array([0, 1, 1, 1, 3, 1, 2])
    result = evaluate_rank(distmat, np.array([1]), g_pids, np.array([0]), g_camids, max_rank=10)
    # Kept ranking: neg, match, match, distractor, match -> matches at ranks 2, 3, 5.
    assert result["mAP"] == pytest.approx((1 / 2 + 2 / 3 + 3 / 5) / 3)
    assert result["mINP"] == pytest.approx(3 / 5)
    # max_rank 10 > 7 gallery images: padded with the last value.
    np.testing.assert_array_equal(result["cmc"], [0, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    assert (result["num_valid_queries"], result["num_skipped_queries"]) == (1, 0)


def test_ties_break_by_gallery_index_and_skipped_queries():
    # All distances equal: the ranking is the gallery order.
    distmat = np.zeros((2, 4))
    g_pids, g_camids = np.array([3, 1, 2, 1]), np.array([0, 0, 0, 1])
    # Query 0 (pid 1, cam 1): g3 is same pid + camera (removed); g1 is the only match, at rank 2.
    # Query 1 (pid 2, cam 0): its only same-pid image shares its camera -> skipped.
    result = evaluate_rank(distmat, np.array([1, 2]), g_pids, np.array([1, 0]), g_camids, max_rank=3)
    assert result["mAP"] == pytest.approx(0.5)
    assert result["mINP"] == pytest.approx(0.5)
    np.testing.assert_array_equal(result["cmc"], [0, 1, 1])
    assert (result["num_valid_queries"], result["num_skipped_queries"]) == (1, 1)


def test_max_rank_larger_than_gallery_matches_reference():
    case = _random_case(5, num_q=10, num_g=12, num_ids=4)
    result = evaluate_rank(*case, max_rank=50)
    reference = classic_loop(*case, max_rank=50)
    assert result["cmc"].shape == (50,)
    np.testing.assert_allclose(result["cmc"], reference["cmc"], atol=1e-6)
    assert result["cmc"][-1] == pytest.approx(1.0)
    assert result["mAP"] == pytest.approx(reference["mAP"], abs=1e-6)


def test_tensors_and_arrays_agree():
    case = _random_case(7)
    from_numpy = evaluate_rank(*case)
    from_torch = evaluate_rank(*(torch.from_numpy(np.asarray(a)) for a in case))
    np.testing.assert_array_equal(from_numpy["cmc"], from_torch["cmc"])
    assert from_numpy["mAP"] == from_torch["mAP"] and from_numpy["mINP"] == from_torch["mINP"]
    assert 0 <= from_numpy["mAP"] <= 1 and 0 <= from_numpy["mINP"] <= from_numpy["mAP"] + 1e-12


def test_bad_inputs_raise():
    distmat, q_pids, g_pids, q_camids, g_camids = _random_case(0)
    with pytest.raises(ValueError, match="g_pids"):
        evaluate_rank(distmat, q_pids, g_pids[:-1], q_camids, g_camids)
    with pytest.raises(ValueError, match="no query has a valid gallery match"):
        evaluate_rank(distmat, q_pids + 1000, g_pids, q_camids, g_camids)


def test_distance_matrices_match_cdist():
    rng = np.random.default_rng(0)
    qf, gf = rng.normal(size=(7, 5)).astype(np.float32), rng.normal(size=(9, 5)).astype(np.float32)
    euclidean = compute_distance_matrix(torch.from_numpy(qf), torch.from_numpy(gf), "euclidean")
    np.testing.assert_allclose(euclidean.numpy(), torch.cdist(torch.from_numpy(qf), torch.from_numpy(gf)).numpy(),
                               atol=1e-5)
    cosine = compute_distance_matrix(torch.from_numpy(qf), torch.from_numpy(gf), "cosine")
    np.testing.assert_allclose(cosine.numpy(), scipy_cdist(qf, gf, "cosine"), atol=1e-5)
    # Identical rows: rounding may not give exactly 0, but never NaN.
    same = compute_distance_matrix(torch.from_numpy(qf) * 1000, torch.from_numpy(qf) * 1000)
    assert torch.isfinite(same).all() and (same >= 0).all()
    with pytest.raises(ValueError, match="unknown distance metric"):
        compute_distance_matrix(torch.from_numpy(qf), torch.from_numpy(gf), "manhattan")
    with pytest.raises(ValueError, match="same D"):
        compute_distance_matrix(torch.from_numpy(qf), torch.from_numpy(gf[:, :3]))


def test_extract_features_eval_mode_order_and_restored_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.Dropout(0.9))
    images = torch.randn(10, 3, 2, 2)
    loader = [(images[i : i + 4], torch.zeros(4), torch.zeros(4), torch.arange(i, i + 4)) for i in range(0, 10, 4)]
    model.train()
    features = extract_features(model, loader, "cpu")
    assert model.training
    assert features.dtype == torch.float32 and features.shape == (10, 4)
    model.eval()
    torch.testing.assert_close(features, model(images).detach())  # Dropout off: eval mode was used
    extract_features(model, loader, "cpu")
    assert not model.training  # an eval-mode model stays in eval mode
    with pytest.raises(ValueError, match="no batch"):
        extract_features(model, [], "cpu")
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        extract_features(nn.Identity(), loader, "cpu")

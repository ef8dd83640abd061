import logging

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist
from sklearn.metrics import normalized_mutual_info_score

import reidmodel.rerank as rerank
import reidmodel.ula as ula
from benchmarks.scale import dense_labels  # the previous path: DBSCAN on the dense N x N matrix
from reidmodel.config import ULAConfig
from reidmodel.ula import label_adaptation, resolve_num_classes

DIM = 32
# Tight clusters around orthogonal unit directions: intra-cluster distances ~0.1, inter ~1.4.
CFG = ULAConfig(eps=0.3, min_samples=4, similarity_threshold=0.8, min_labelled_fraction=0.05)


def _blobs(sizes, seed=0, noise=0.02, extras=()):
    """Clusters k of sizes[k] around e_k; ``extras`` are (cluster, offset) samples off a cluster.

    An extra lies at normalize(e_k + offset * u) with its own orthogonal direction u: offset 0.5 is
    cosine 0.89 from its template (labelled at threshold 0.8) yet 0.46 from every member, beyond
    eps, so DBSCAN calls it noise; offset 1.0 is cosine 0.71 (stays unlabelled).
    """
    rng = np.random.default_rng(seed)
    eye = np.eye(DIM)
    features = [eye[k] + noise * rng.normal(size=(size, DIM)) for k, size in enumerate(sizes)]
    ids = [np.full(size, k) for k, size in enumerate(sizes)]
    for j, (cluster, offset) in enumerate(extras):
        features.append((eye[cluster] + offset * eye[DIM - 1 - j])[None])
        ids.append(np.array([cluster]))
    return np.concatenate(features).astype(np.float32), np.concatenate(ids)


def test_recovers_known_clusters_and_labels_extras_by_template():
    sizes = [12, 10, 9, 8, 7]
    extras = [(0, 0.5), (3, 0.5), (1, 1.0)]
    features, ids = _blobs(sizes, extras=extras)
    result = label_adaptation(features, CFG, num_classes=5, true_ids=ids)
    d = result.diagnostics
    assert (d["num_clusters"], d["num_classes"], d["num_noise"]) == (5, 5, 3)
    assert d["precision"] == 1.0 and d["recall"] == 1.0 and d["purity"] == 1.0 and d["nmi"] == pytest.approx(1.0)
    assert not d["degenerate"] and d["reason"] == ""
    labels = result.pseudo_labels
    assert labels.dtype == np.int64
    # Classes are contiguous, the largest cluster first.
    np.testing.assert_array_equal(labels[: sum(sizes)], ids[: sum(sizes)])
    # Extras at cosine 0.89 join their cluster's class; the one at cosine 0.71 stays unlabelled.
    np.testing.assert_array_equal(labels[sum(sizes):], [0, 3, -1])
    assert d["num_labelled"] == sum(sizes) + 2
    assert d["labelled_fraction"] == pytest.approx((sum(sizes) + 2) / len(features))
    assert d["largest_cluster_fraction"] == pytest.approx(12 / len(features))
    assert result.templates.dtype == np.float32 and result.templates.shape == (5, DIM)
    np.testing.assert_allclose(np.linalg.norm(result.templates, axis=1), 1, atol=1e-6)
    # Templates are the normalised means of the base clusters' normalised members (not of the extras).
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    mean = unit[:12].mean(0)
    np.testing.assert_allclose(result.templates[0], mean / np.linalg.norm(mean), atol=1e-6)


def test_fewer_classes_keep_the_largest_clusters_and_more_take_all():
    features, ids = _blobs([7, 12, 9, 10, 8])
    three = label_adaptation(features, CFG, num_classes=3)
    assert three.diagnostics["num_classes"] == 3 and three.diagnostics["num_clusters"] == 5
    labels = three.pseudo_labels
    # Sizes 12, 10, 9 are clusters 1, 3, 2; the others' members are far from every template.
    for label, cluster in enumerate([1, 3, 2]):
        assert (labels[ids == cluster] == label).all()
    assert (labels[np.isin(ids, [0, 4])] == -1).all()
    everything = label_adaptation(features, CFG, num_classes=50)
    assert everything.diagnostics["num_classes"] == 5
    assert (everything.pseudo_labels >= 0).all()


def test_size_ties_go_to_the_densest_cluster():
    rng = np.random.default_rng(1)
    eye = np.eye(DIM)
    loose = eye[0] + 0.04 * rng.normal(size=(6, DIM))
    tight = eye[1] + 0.01 * rng.normal(size=(6, DIM))
    big = eye[2] + 0.02 * rng.normal(size=(8, DIM))
    features = np.concatenate([loose, tight, big]).astype(np.float32)
    result = label_adaptation(features, CFG, num_classes=2)
    assert result.diagnostics["num_clusters"] == 3
    np.testing.assert_array_equal(result.pseudo_labels, [-1] * 6 + [1] * 6 + [0] * 8)


def test_deterministic_and_independent_of_true_ids():
    features, ids = _blobs([12, 10, 9, 8, 7], extras=[(0, 0.5), (2, 0.5)])
    first = label_adaptation(torch.from_numpy(features), CFG, num_classes=5, true_ids=ids)
    again = label_adaptation(features, CFG, num_classes=5, true_ids=ids)
    np.testing.assert_array_equal(first.pseudo_labels, again.pseudo_labels)
    np.testing.assert_array_equal(first.templates, again.templates)
    shuffled = label_adaptation(features, CFG, num_classes=5, true_ids=np.random.default_rng(0).permutation(ids))
    blind = label_adaptation(features, CFG, num_classes=5)
    for other in (shuffled, blind):
        np.testing.assert_array_equal(other.pseudo_labels, first.pseudo_labels)
        np.testing.assert_array_equal(other.templates, first.templates)
    assert shuffled.diagnostics["precision"] < 0.5 and first.diagnostics["precision"] == 1.0
    assert "precision" not in blind.diagnostics
    # Normalisation makes the labels blind to each feature's scale.
    scaled = features * np.random.default_rng(1).uniform(1, 50, size=(len(features), 1)).astype(np.float32)
    np.testing.assert_array_equal(label_adaptation(scaled, CFG, num_classes=5).pseudo_labels, first.pseudo_labels)


def test_pairwise_precision_recall_purity_by_hand():
    features, ids = _blobs([12, 10, 9, 8, 7])
    true_ids = ids.copy()
    true_ids[:2] = 9  # two members of cluster 0 are truly another identity: precision drops, recall does not
    d = label_adaptation(features, CFG, num_classes=5, true_ids=true_ids).diagnostics
    # Predicted-same pairs: C(12,2)+C(10,2)+C(9,2)+C(8,2)+C(7,2) = 66+45+36+28+21 = 196.
    # True-same pairs: C(10,2)+C(2,2)+45+36+28+21 = 176, all of them inside one pseudo class.
    assert d["precision"] == pytest.approx(176 / 196)
    assert d["recall"] == pytest.approx(1.0)
    assert d["purity"] == pytest.approx(44 / 46)
    assert d["nmi"] == pytest.approx(normalized_mutual_info_score(true_ids, ids))


def test_jaccard_distance_and_quantile_eps():
    features, ids = _blobs([12, 10, 9, 8, 7])
    jaccard = label_adaptation(features, CFG.model_copy(update=dict(distance="jaccard", eps=0.6, k1=6, k2=2)), 5, true_ids=ids)
    assert jaccard.diagnostics["num_classes"] == 5 and jaccard.diagnostics["precision"] == 1.0
    quantile = CFG.model_copy(update=dict(eps_mode="quantile", eps_quantile=0.1))
    result = label_adaptation(features, quantile, 5, true_ids=ids)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    assert result.diagnostics["eps"] == pytest.approx(np.quantile(pdist(unit), 0.1), rel=1e-4)
    assert result.diagnostics["num_classes"] == 5 and result.diagnostics["precision"] == 1.0


def _degenerate(features, cfg, num_classes, caplog):
    with caplog.at_level(logging.INFO, logger="reidmodel.ula"):
        result = label_adaptation(features, cfg, num_classes)
    d = result.diagnostics
    assert d["degenerate"] is True
    assert "\n" not in d["reason"]
    assert caplog.records[-1].levelno == logging.WARNING and d["reason"] in caplog.records[-1].getMessage()
    return d


def test_no_cluster_is_degenerate(caplog):
    features, _ = _blobs([6, 6])
    d = _degenerate(features, CFG.model_copy(update=dict(eps=1e-4)), 2, caplog)
    assert d["num_clusters"] == 0 and d["num_labelled"] == 0 and d["largest_cluster_fraction"] == 0.0
    assert "no cluster" in d["reason"] and "raise ula.eps" in d["reason"]


def test_one_giant_cluster_is_degenerate(caplog):
    features, _ = _blobs([12, 10, 9])
    d = _degenerate(features, CFG.model_copy(update=dict(eps=1.6)), 5, caplog)
    assert d["reason"] == ("DBSCAN found 1 cluster holding 100% of 31 samples at eps=1.60: lower ula.eps or use "
                           "ula.eps_mode=quantile / ula.distance=jaccard")


def test_one_small_cluster_and_k_of_one_are_degenerate(caplog):
    features, _ = _blobs([10], extras=[(0, 3.0)] * 1 + [(0, 4.0)])  # one cluster + 2 far samples
    d = _degenerate(features, CFG.model_copy(update=dict(max_cluster_fraction=0.95)), 5, caplog)
    assert d["num_clusters"] == 1 and "raise ula.eps" in d["reason"]
    features, _ = _blobs([8, 8])
    d = _degenerate(features, CFG, 1, caplog)
    assert d["num_clusters"] == 2 and d["num_classes"] == 1 and "ula.num_classes" in d["reason"]


def test_dominant_cluster_is_degenerate(caplog):
    features, _ = _blobs([30, 5])
    d = _degenerate(features, CFG, 2, caplog)
    assert d["num_classes"] == 2 and d["largest_cluster_fraction"] == pytest.approx(30 / 35)
    assert "86%" in d["reason"] and "ula.max_cluster_fraction=0.5" in d["reason"]


def test_few_labelled_samples_is_degenerate(caplog):
    rng = np.random.default_rng(0)
    features, _ = _blobs([4, 4])
    scattered = rng.normal(size=(40, DIM)).astype(np.float32)  # random directions: noise, below threshold
    d = _degenerate(np.concatenate([features, scattered]), CFG.model_copy(update=dict(min_labelled_fraction=0.3)), 2, caplog)
    assert d["num_labelled"] == 8 and d["labelled_fraction"] == pytest.approx(8 / 48)
    assert "ula.min_labelled_fraction=0.3" in d["reason"]


def test_healthy_clustering_logs_info(caplog):
    features, ids = _blobs([12, 10, 9])
    with caplog.at_level(logging.INFO, logger="reidmodel.ula"):
        label_adaptation(features, CFG, 3, true_ids=ids)
    assert caplog.records[-1].levelno == logging.INFO
    assert "31/31 labelled" in caplog.records[-1].getMessage() and "precision 1.000" in caplog.records[-1].getMessage()


def _identities(seed, num_ids=40, dim=48, noise=0.5):
    """Identities of 3-8 images each (many equal sizes) with overlapping spreads."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 9, num_ids)
    centers = rng.normal(size=(num_ids, dim))
    spread = noise * rng.uniform(0.5, 1.5, num_ids)
    clusters = [c + s * rng.normal(size=(n, dim)) for c, s, n in zip(centers, spread, sizes, strict=True)]
    return np.concatenate(clusters).astype(np.float32)


@pytest.mark.parametrize("overrides", [
    {"distance": "jaccard", "eps": 0.5, "k1": 20, "k2": 6},
    {"distance": "jaccard", "eps": 0.6, "k1": 8, "k2": 3},
    {"distance": "jaccard", "eps_mode": "quantile", "eps_quantile": 0.01},
    {"distance": "euclidean", "eps": 0.9},
    {"distance": "euclidean", "eps_mode": "quantile", "eps_quantile": 0.005},
    {"distance": "euclidean", "eps_mode": "quantile", "eps_quantile": 0.01, "normalize": False},
])
def test_sparse_neighbourhoods_give_thedense_labels(overrides, monkeypatch):
    # Small blocks, so that rows meet their neighbours across blocks and the quantile's running cut works.
    monkeypatch.setattr(ula, "_BLOCK_BYTES", 4 * 250 * 17)
    monkeypatch.setattr(rerank, "_BLOCK_BYTES", 4 * 250 * 17)
    monkeypatch.setattr(ula, "_TIE_ROWS", 3)
    cfg = CFG.model_copy(update=dict(similarity_threshold=1.0, **overrides))  # nothing joins by template: DBSCAN's labels only
    for seed in range(3):
        features = _identities(seed, noise=0.4 + 0.15 * seed)
        for num_classes in (5, 20, 100):
            labels, eps = dense_labels(features, cfg, num_classes)
            result = label_adaptation(features, cfg, num_classes)
            assert result.diagnostics["eps"] == eps
            np.testing.assert_array_equal(result.pseudo_labels, labels)


def test_size_ties_ordered_by_density_as_the_dense_path():
    # Equal sizes everywhere: which clusters are kept, and their class order, follow the mean distance.
    rng = np.random.default_rng(3)
    eye = np.eye(DIM)
    spreads = [0.03, 0.01, 0.04, 0.02, 0.015]
    features = np.concatenate([eye[k] + s * rng.normal(size=(6, DIM)) for k, s in enumerate(spreads)])
    features = features.astype(np.float32)
    for distance in ("euclidean", "jaccard"):
        cfg = CFG.model_copy(update=dict(distance=distance, eps=0.3 if distance == "euclidean" else 0.7, k1=5, k2=2,
                                          similarity_threshold=1.0))
        labels = label_adaptation(features, cfg, num_classes=3).pseudo_labels
        np.testing.assert_array_equal(labels, dense_labels(features, cfg, 3)[0])
    # By tightness: spread 0.01 -> class 0, 0.015 -> 1, 0.02 -> 2; the two loosest are left out.
    np.testing.assert_array_equal(labels.reshape(5, 6)[:, 0], [-1, 0, -1, 2, 1])


def test_jaccard_eps_of_one_joins_everything():
    features, _ = _blobs([12, 10, 9])
    result = label_adaptation(features, CFG.model_copy(update=dict(distance="jaccard", eps=1.0, k1=6, k2=2)), 3)
    assert result.diagnostics["num_clusters"] == 1 and result.diagnostics["degenerate"]
    few = label_adaptation(features[:5], CFG.model_copy(update=dict(distance="jaccard", eps=1.0, k1=3, k2=2, min_samples=6)), 3)
    assert few.diagnostics["num_clusters"] == 0


def test_resolve_num_classes():
    assert resolve_num_classes(ULAConfig(num_classes=750), 702) == 750
    assert resolve_num_classes(ULAConfig(num_classes=None, class_ratio=1.07), 751) == 804
    assert resolve_num_classes(ULAConfig(num_classes=None, class_ratio=0.93), 751) == 698
    assert resolve_num_classes(ULAConfig(num_classes=None, class_ratio=0.1), 2) == 1
    with pytest.raises(ValueError, match="num_target_ids"):
        resolve_num_classes(ULAConfig(num_classes=None), 0)
    # Of the clusters: counted by label_adaptation once it has clustered; num_classes still wins.
    assert resolve_num_classes(ULAConfig(num_classes=None, class_ratio_of="clusters"), 751) is None
    assert resolve_num_classes(ULAConfig(num_classes=700, class_ratio_of="clusters"), 751) == 700


def test_k_of_the_clusters_reads_no_identity_count():
    """class_ratio x the clusters found: 0.6 of 5 clusters keeps the 3 largest, as num_classes=3 does, and the
    result cannot depend on how many identities the target has, which is never passed."""
    features, ids = _blobs([7, 12, 9, 10, 8])
    cfg = CFG.model_copy(update={"num_classes": None, "class_ratio": 0.6, "class_ratio_of": "clusters"})
    of_clusters = label_adaptation(features, cfg, resolve_num_classes(cfg, 10_000))
    three = label_adaptation(features, CFG, num_classes=3)
    assert of_clusters.diagnostics["requested_classes"] == 3 == of_clusters.diagnostics["num_classes"]
    np.testing.assert_array_equal(of_clusters.pseudo_labels, three.pseudo_labels)
    above = label_adaptation(features, cfg.model_copy(update={"class_ratio": 1.3}), None)
    assert above.diagnostics["requested_classes"] == 6 and above.diagnostics["num_classes"] == 5


def test_bad_inputs_raise():
    features, ids = _blobs([6, 6])
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        label_adaptation(features[0], CFG, 2)
    with pytest.raises(ValueError, match="true_ids"):
        label_adaptation(features, CFG, 2, true_ids=ids[:-1])
    with pytest.raises(ValueError, match="NaN"):
        label_adaptation(np.full_like(features, np.nan), CFG, 2)
    with pytest.raises(ValueError, match="num_classes"):
        label_adaptation(features, CFG, 0)

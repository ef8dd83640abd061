"""The label-free validators on hand-made features with known answers, their classification in the metric registry,
and the labelled target validation split."""

import math
import re

import numpy as np
import pytest
import torch
from sklearn.metrics import silhouette_score

from reidmodel import pipeline
from reidmodel.config import ConfigError, apply_overrides
from reidmodel.cycle_metrics import METRICS, Metric, label_free_metric_names
from reidmodel.validators import (
    batch_nuclear_norm,
    class_ami,
    clustering_validators,
    deep_embedded_validation,
    domain_weights,
    info_max_ratio,
    information_maximisation,
    kmeans_clusters,
    model_validators,
    noise_fraction,
    pseudo_label_stability,
    sample_indices,
    silhouette,
    soft_neighbourhood_density,
)


def clusters(spread: float, num_clusters: int = 4, per_cluster: int = 10, dim: int = 8, seed: int = 0):
    """Features around ``num_clusters`` orthogonal centres with noise ``spread``, and their cluster ids."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_clusters), per_cluster)
    features = np.eye(dim)[labels] + spread * rng.normal(size=(len(labels), dim))
    return torch.tensor(features, dtype=torch.float32), labels


def one_hot_logits(predictions, num_classes: int, scale: float = 10.0) -> torch.Tensor:
    return scale * torch.nn.functional.one_hot(torch.as_tensor(predictions), num_classes).float()


def test_snd_prefers_dense_neighbourhoods():
    separated, _ = clusters(0.05)
    mixed, _ = clusters(2.0)
    assert soft_neighbourhood_density(separated) > soft_neighbourhood_density(mixed)
    # Tight clusters of 10: each softmax spreads evenly over the 9 other members.
    assert soft_neighbourhood_density(separated) == pytest.approx(math.log(9), abs=0.05)


def test_class_ami_rewards_a_classifier_that_follows_the_clusters():
    features, labels = clusters(0.05)
    found = kmeans_clusters(features, 4, seed=0)
    assert class_ami(one_hot_logits(labels, 4), found) == pytest.approx(1.0)
    shuffled = np.random.default_rng(1).permutation(labels)
    assert class_ami(one_hot_logits(shuffled, 4), found) < 0.2
    mixed, _ = clusters(2.0)
    assert class_ami(one_hot_logits(labels, 4), kmeans_clusters(mixed, 4, seed=0)) < 0.5


def test_kmeans_is_seeded_and_caps_the_cluster_count():
    features, _ = clusters(0.5)
    assert np.array_equal(kmeans_clusters(features, 4, seed=3), kmeans_clusters(features, 4, seed=3))
    assert len(np.unique(kmeans_clusters(features[:5], 40, seed=0))) == 5


def test_a_constant_prediction_scores_worst_on_im_and_bnm():
    labels = np.arange(40) % 4
    constant_class = one_hot_logits(np.zeros(40, dtype=int), 4)
    uniform = torch.zeros(40, 4)
    confident_balanced = one_hot_logits(labels, 4, scale=50.0)
    random_logits = torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
    assert information_maximisation(constant_class) == pytest.approx(0.0, abs=1e-9)
    assert information_maximisation(uniform) == pytest.approx(0.0, abs=1e-9)
    assert information_maximisation(confident_balanced) == pytest.approx(math.log(4), abs=1e-6)
    assert 0 < information_maximisation(random_logits) < math.log(4)
    # BNM: the constant uniform prediction is the minimum sqrt(1 / (N K)); balanced one-hots give sqrt(K / N).
    assert batch_nuclear_norm(uniform) == pytest.approx(math.sqrt(1 / (40 * 4)))
    assert batch_nuclear_norm(confident_balanced) == pytest.approx(math.sqrt(4 / 40), rel=1e-6)
    for constant in (constant_class, uniform):
        assert batch_nuclear_norm(constant) < batch_nuclear_norm(random_logits) < batch_nuclear_norm(confident_balanced)


def test_im_over_log_k_compares_classifiers_of_different_sizes():
    """Confident, balanced predictions over 4 and over 40 classes: IM tells the 40 apart (log 40 > log 4) where the
    ratio calls both perfect; a constant prediction is 0 for any K, and K = 1 has no ceiling to divide by."""
    small = one_hot_logits(np.arange(40) % 4, 4, scale=50.0)
    large = one_hot_logits(np.arange(40), 40, scale=50.0)
    assert information_maximisation(large) > information_maximisation(small) + 2
    assert info_max_ratio(information_maximisation(small), 4) == pytest.approx(1.0, abs=1e-6)
    assert info_max_ratio(information_maximisation(large), 40) == pytest.approx(1.0, abs=1e-6)
    assert info_max_ratio(information_maximisation(one_hot_logits(np.zeros(40, dtype=int), 40)), 40) == \
        pytest.approx(0.0, abs=1e-9)
    assert math.isnan(info_max_ratio(0.0, 1))
    found = model_validators(clusters(0.05)[0], small, seed=0)
    assert found["info_max_ratio"] == pytest.approx(found["info_max"] / math.log(4))


@pytest.mark.parametrize("spread", [0.05, 0.6])
def test_silhouette_over_all_rows_is_scikit_learns(spread):
    features, labels = clusters(spread)
    distances = torch.cdist(features, features).numpy()
    np.fill_diagonal(distances, 0)
    expected = silhouette_score(distances, labels, metric="precomputed")
    assert silhouette(distances, np.arange(len(labels)), labels) == pytest.approx(expected, abs=1e-5)
    rows = np.array([0, 13, 27, 39])
    per_sample = silhouette(distances[rows], rows, labels)
    assert -1 <= per_sample <= 1


def test_silhouette_prefers_separated_clusters_and_needs_two():
    separated, labels = clusters(0.05)
    mixed, _ = clusters(2.0)
    rows = np.arange(len(labels))
    assert (silhouette(torch.cdist(separated, separated).numpy(), rows, labels)
            > 0.8 > 0.1 > silhouette(torch.cdist(mixed, mixed).numpy(), rows, labels))
    assert math.isnan(silhouette(np.zeros((3, 3)), np.arange(3), np.zeros(3, dtype=int)))
    singleton = np.array([0, 0, 1])  # a member of a singleton cluster scores 0, as in scikit-learn
    distances = np.array([[0, 1, 5], [1, 0, 5], [5, 5, 0]], dtype=np.float32)
    assert silhouette(distances[[2]], np.array([2]), singleton) == 0


def test_noise_fraction_and_stability():
    assert noise_fraction(np.array([-1, 0, 0, -1])) == 0.5
    labels = np.array([0, 0, 1, 1, 2, 2, -1])
    assert pseudo_label_stability(labels, labels) == pytest.approx(1.0)
    renamed = np.array([5, 5, 3, 3, 4, 4, 0])  # the same partition of the images labelled in both, renamed
    assert pseudo_label_stability(labels, renamed) == pytest.approx(1.0)
    churned = np.array([0, 1, 2, 0, 1, 2, 0])
    assert pseudo_label_stability(labels, churned) < 0.1
    assert math.isnan(pseudo_label_stability(np.array([0, -1]), np.array([-1, 0])))


def test_clustering_validators_on_a_ula_step():
    features, labels = clusters(0.05)
    cluster_ids = labels.copy()
    cluster_ids[:3] = -1

    def euclidean(rows, columns):
        return torch.cdist(features[rows], features[columns]).numpy()

    first = clustering_validators(cluster_ids, euclidean, labels, None, samples=16, seed=0)
    assert first["ula_noise_fraction"] == pytest.approx(3 / 40) and math.isnan(first["pseudo_label_stability"])
    assert first["ula_silhouette"] > 0.8
    again = clustering_validators(cluster_ids, euclidean, labels, labels, samples=16, seed=0)
    assert again["pseudo_label_stability"] == pytest.approx(1.0) and again["ula_silhouette"] == first["ula_silhouette"]


def test_dev_with_equal_weights_is_the_mean_loss():
    losses = np.array([0.1, 0.5, 0.9, 0.3])
    assert deep_embedded_validation(losses, np.ones(4)) == pytest.approx(losses.mean())
    # The control variate: a loss the weights do not change is estimated exactly, however noisy the weights.
    assert deep_embedded_validation(np.full(4, 0.4), np.array([0.2, 3.0, 0.7, 1.9])) == pytest.approx(0.4)


def test_domain_weights_favour_target_like_source_samples():
    rng = np.random.default_rng(0)
    near = torch.tensor(np.eye(8)[0] + 0.1 * rng.normal(size=(30, 8)), dtype=torch.float32)
    far = torch.tensor(np.eye(8)[1] + 0.1 * rng.normal(size=(30, 8)), dtype=torch.float32)
    target = torch.tensor(np.eye(8)[0] + 0.1 * rng.normal(size=(40, 8)), dtype=torch.float32)
    weights = domain_weights(torch.cat([near, far]), target, seed=0)
    assert weights.shape == (60,) and (weights > 0).all()
    assert weights[:30].min() > weights[30:].max()
    assert np.array_equal(weights, domain_weights(torch.cat([near, far]), target, seed=0))


def test_dev_estimates_the_risk_of_the_source_queries_that_look_like_the_target():
    """Source queries of two kinds, one retrieved well (AP 0.9), one badly (AP 0.2): DEV follows the kind the
    target resembles, while the plain source mAP cannot tell the two targets apart."""
    rng = np.random.default_rng(1)
    easy, hard = (torch.tensor(np.eye(8)[k] + 0.1 * rng.normal(size=(40, 8)), dtype=torch.float32) for k in (0, 1))
    query_features = torch.cat([easy, hard])
    query_ap = np.r_[np.full(40, 0.9), np.full(40, 0.2), np.nan][:80]
    logits = torch.zeros(50, 3)
    like = {k: torch.tensor(np.eye(8)[k] + 0.1 * rng.normal(size=(50, 8)), dtype=torch.float32) for k in (0, 1)}
    dev = {k: model_validators(like[k], logits, 0, (query_features, query_ap))["dev"] for k in (0, 1)}
    assert dev[0] < 1 - query_ap.mean() < dev[1]
    assert dev[0] == pytest.approx(0.1, abs=0.1) and dev[1] == pytest.approx(0.8, abs=0.1)
    skipped = np.r_[query_ap[:79], np.nan]  # a query without a valid match carries no loss
    assert math.isfinite(model_validators(like[0], logits, 0, (query_features, skipped))["dev"])
    assert "dev" not in model_validators(like[0], logits, 0)


def test_sample_is_seeded_sorted_and_leaves_the_global_rngs_alone():
    np.random.seed(0)
    torch.manual_seed(0)
    before = (np.random.random(), torch.rand(1))
    np.random.seed(0)
    torch.manual_seed(0)
    chosen = sample_indices(100, 10, seed=4)
    assert (np.random.random(), torch.rand(1)) == before
    assert np.array_equal(chosen, sample_indices(100, 10, seed=4)) and np.all(np.diff(chosen) > 0)
    assert np.array_equal(sample_indices(5, 10, seed=4), np.arange(5))


# --- the registry: what each metric reads of the target's labels ---------------------------------------------------

ORACLE = {f"target_{key}" for key in ("mAP", "R1", "R5", "R10", "mINP")} | {
    f"ula_{key}" for key in ("precision", "recall", "purity", "nmi")}
VALIDATION = {"target_val_mAP", "target_val_R1"}


def test_every_metric_says_which_target_labels_it_reads():
    for name, declared in METRICS.items():
        expected = "oracle" if name in ORACLE else "validation" if name in VALIDATION else "none"
        assert declared.target_labels == expected, name
        assert declared.reads_target_labels == (expected != "none"), name
    assert set(label_free_metric_names()) == set(METRICS) - ORACLE - VALIDATION
    assert {"snd", "class_ami", "info_max", "info_max_ratio", "bnm", "dev", "ula_silhouette", "ula_noise_fraction",
            "pseudo_label_stability", "source_mAP", "loss_total", "ula_num_clusters"} <= set(label_free_metric_names())


def test_a_metric_cannot_be_declared_without_the_flag():
    with pytest.raises(TypeError):
        Metric("x", "x", ".1f", "help")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="target_labels='maybe' is not one of none, validation, oracle"):
        Metric("x", "x", ".1f", "help", "maybe")  # type: ignore[arg-type]


# --- the labelled target validation split -------------------------------------------------------------------------


def test_target_validation_split_is_off_by_default(tiny_config):
    assert tiny_config.data.target_val_ids == 0
    run = pipeline.start_run(tiny_config)
    assert run.target_val is None
    assert run.target.dataset.train == pipeline.load_domain(tiny_config, tiny_config.data.target).dataset.train


def test_target_validation_split_holds_identities_out_of_ulas_pool(tiny_config):
    config = apply_overrides(tiny_config, {"data.target_val_ids": 3})
    whole = pipeline.load_domain(config, config.data.target)
    run = pipeline.start_run(config)
    val, pool = run.target_val.dataset, run.target.dataset
    held = {r.pid for r in val.query + val.gallery}
    assert len(held) == 3 and held.isdisjoint({r.pid for r in pool.train})
    assert sorted(r.path for r in pool.train + val.query + val.gallery) == sorted(r.path for r in whole.dataset.train)
    # Disjoint from the test split: no image, and no original identity (the file name's, before relabelling).
    test = whole.dataset.query + whole.dataset.gallery
    assert {r.path for r in val.query + val.gallery}.isdisjoint(r.path for r in test)

    def original_ids(records):
        return {int(re.match(r"(\d+)_c", r.path.rsplit("/", 1)[-1])[1]) for r in records}

    assert original_ids(val.query + val.gallery).isdisjoint(original_ids(test))
    assert len({(r.pid, r.camid) for r in val.query}) == len(val.query)  # one query per identity and camera
    assert run.target.images["train"].shape[0] == len(pool.train)
    assert run.target_val.images["query"].shape[0] == len(val.query)
    again = pipeline.start_run(apply_overrides(config, {"runtime.seed": 5}))
    assert {r.path for r in again.target_val.dataset.query} == {r.path for r in val.query}  # not the training seed's


def test_target_validation_split_is_checked(tiny_config):
    with pytest.raises(ConfigError, match="data.target_val_ids=-1 is out of range"):
        apply_overrides(tiny_config, {"data.target_val_ids": -1})
    with pytest.raises(ValueError, match="leaves no identity of the target's 8 for ULA: lower it"):
        pipeline.start_run(apply_overrides(tiny_config, {"data.target_val_ids": 8}))

import math

import pytest
import torch

from reidmodel.config import MemoryConfig
from reidmodel.memory import ClusterMemory, ClusterMemoryLoss
from reidmodel.model.reid_net import ReIDOutput

# Four hand-made 2-d features, two per class; the memory starts at the two axes.
FEATURES = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 4.0], [-1.0, 1.0]])
LABELS = torch.tensor([0, 1, 0, 1])
AXES = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
ROOT_HALF = math.sqrt(0.5)


def test_infonce_over_the_centroids_by_hand():
    memory = ClusterMemory(AXES, momentum=0.5, temperature=0.5)
    # Normalised features: (1, 0), (0, 1), (0.6, 0.8), (-r, r) with r = sqrt(1/2); logits = cosines / 0.5.
    expected = [
        -math.log(math.exp(2) / (math.exp(2) + math.exp(0))),
        -math.log(math.exp(2) / (math.exp(0) + math.exp(2))),
        -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(1.6))),
        -math.log(math.exp(2 * ROOT_HALF) / (math.exp(-2 * ROOT_HALF) + math.exp(2 * ROOT_HALF))),
    ]
    assert memory.loss(FEATURES, LABELS).item() == pytest.approx(sum(expected) / 4, rel=1e-6)


def test_per_sample_momentum_update_by_hand():
    memory = ClusterMemory(AXES, momentum=0.5, temperature=0.05)
    memory.update(FEATURES, LABELS)
    # Class 0: (1, 0) -> norm(0.5 (1, 0) + 0.5 (1, 0)) = (1, 0) -> norm(0.5 (1, 0) + 0.5 (0.6, 0.8)) = norm(0.8, 0.4).
    torch.testing.assert_close(memory.centroids[0], torch.tensor([0.8, 0.4]) / math.hypot(0.8, 0.4))
    # Class 1: (0, 1) -> (0, 1) -> norm(0.5 (0, 1) + 0.5 (-r, r)) = norm(-r/2, 1/2 + r/2).
    class_1 = torch.tensor([-0.5 * ROOT_HALF, 0.5 + 0.5 * ROOT_HALF])
    torch.testing.assert_close(memory.centroids[1], class_1 / class_1.norm())


def test_a_class_without_samples_keeps_its_centroid():
    memory = ClusterMemory(AXES, momentum=0.2, temperature=0.05)
    memory.update(FEATURES[2:3], LABELS[2:3])  # (3, 4), class 0
    torch.testing.assert_close(memory.centroids[1], AXES[1])
    assert not torch.equal(memory.centroids[0], AXES[0])


def test_the_loss_scores_the_batch_before_moving_the_memory_and_trains_the_features():
    loss = ClusterMemoryLoss(AXES, MemoryConfig(momentum=0.5, temperature=0.5), triplet_margin=0.3)
    features = FEATURES.clone().requires_grad_(True)
    output = ReIDOutput(logits=torch.zeros(4, 2), global_feat=features, bn_feat=features)
    total, parts = loss(output, LABELS)
    assert parts["loss_id"] == pytest.approx(ClusterMemory(AXES, 0.5, 0.5).loss(FEATURES, LABELS).item())
    assert set(parts) == {"loss_id", "loss_total"} and parts["loss_total"] == parts["loss_id"]
    assert not torch.equal(loss.memory.centroids, AXES)  # moved after scoring
    total.backward()  # the in-place update must not break the backward pass
    assert features.grad is not None and features.grad.abs().sum() > 0
    assert list(loss.parameters()) == []  # nothing for an optimiser: the memory moves by its rule alone


def test_triplet_is_added_when_asked():
    loss = ClusterMemoryLoss(AXES, MemoryConfig(triplet=True), triplet_margin=10.0)
    output = ReIDOutput(logits=torch.zeros(4, 2), global_feat=FEATURES, bn_feat=FEATURES)
    total, parts = loss(output, LABELS)
    assert parts["loss_triplet"] > 0
    assert total.item() == pytest.approx(parts["loss_id"] + parts["loss_triplet"], rel=1e-6)


def test_bad_memory_settings_are_refused():
    with pytest.raises(ValueError, match="memory.momentum"):
        ClusterMemory(AXES, momentum=1.0, temperature=0.05)
    with pytest.raises(ValueError, match=r"\[K, D\]"):
        ClusterMemory(torch.zeros(0, 2), momentum=0.1, temperature=0.05)

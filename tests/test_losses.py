import math

import pytest
import torch
import torch.nn.functional as F

from reidmodel.config import LossConfig
from reidmodel.losses import CenterLoss, CrossEntropyLabelSmooth, ReIDLoss, TripletLoss
from reidmodel.model import ReIDOutput


def test_label_smoothing_matches_the_strong_baseline_formula():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    targets = torch.tensor([0, 2])
    expected = 0.0
    for row, target in zip(logits.tolist(), targets.tolist(), strict=True):
        log_norm = math.log(sum(math.exp(v) for v in row))
        for k, value in enumerate(row):
            weight = 0.9 * (k == target) + 0.1 / 3
            expected -= weight * (value - log_norm)
    expected /= 2
    assert CrossEntropyLabelSmooth(0.1)(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    assert CrossEntropyLabelSmooth(0.0)(logits, targets).item() == pytest.approx(
        F.cross_entropy(logits, targets).item(), rel=1e-6
    )


def triplet_case():
    # Identity 0 at (0,0) and (3,0); identity 1 at (0,1) and (0,4).
    features = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 4.0]], requires_grad=True)
    return features, torch.tensor([0, 0, 1, 1])


def test_triplet_uses_the_hardest_pairs():
    features, targets = triplet_case()
    # Hardest positive is 3 for every anchor; hardest negatives are 1, sqrt(10), 1 and 4.
    expected = (2.3 + (3 - math.sqrt(10) + 0.3) + 2.3 + 0.0) / 4
    loss = TripletLoss(0.3)(features, targets)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0
    assert TripletLoss(0.0)(*triplet_case()).item() == pytest.approx(1.0, rel=1e-5)


def test_triplet_refuses_a_negative_margin():
    with pytest.raises(ValueError, match="loss.triplet_margin"):
        TripletLoss(-0.1)


def test_center_loss_value_and_set_centers():
    loss = CenterLoss(num_classes=2, feat_dim=2)
    torch.testing.assert_close(loss.centers.norm(dim=1), torch.ones(2))
    loss.set_centers(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    features = torch.tensor([[1.0, 2.0], [3.0, 1.0], [0.0, 0.0]])
    targets = torch.tensor([0, 1, 1])
    # Squared distances 4, 9 and 1.
    assert loss(features, targets).item() == pytest.approx(0.5 * (4 + 9 + 1) / 3)
    assert isinstance(loss.centers, torch.nn.Parameter) and loss.centers.requires_grad
    with pytest.raises(ValueError, match=r"templates have shape \(3, 2\)"):
        loss.set_centers(torch.zeros(3, 2))


def test_reid_loss_combines_the_three_terms():
    torch.manual_seed(0)
    cfg = LossConfig(label_smoothing=0.1, triplet_margin=0.3, center_weight=0.5)
    criterion = ReIDLoss(cfg, num_classes=3, feat_dim=4)
    templates = F.normalize(torch.randn(3, 4), dim=1)
    criterion.center.set_centers(templates)
    logits = torch.randn(6, 3, requires_grad=True)
    global_feat = torch.randn(6, 4, requires_grad=True)
    bn_feat = torch.randn(6, 4) * 5
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    total, parts = criterion(ReIDOutput(logits, global_feat, bn_feat), targets)

    id_loss = CrossEntropyLabelSmooth(0.1)(logits, targets)
    triplet = TripletLoss(0.3)(global_feat, targets)
    center = 0.5 * (F.normalize(bn_feat, dim=1) - templates[targets]).pow(2).sum(1).mean()
    assert total.item() == pytest.approx((id_loss + triplet + 0.5 * center).item(), rel=1e-6)
    assert set(parts) == {"loss_id", "loss_triplet", "loss_center", "loss_total"}
    assert all(isinstance(value, float) for value in parts.values())
    assert parts["loss_center"] == pytest.approx(center.item(), rel=1e-6)
    assert parts["loss_total"] == pytest.approx(total.item())
    total.backward()
    assert criterion.center.centers.grad.abs().sum() > 0 and global_feat.grad.abs().sum() > 0

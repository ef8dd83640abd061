"""The three losses of docs/method.md section 4: L = L_ID + L_Triplet + beta * L_Common."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reidmodel.config import LossConfig
from reidmodel.model.reid_net import ReIDOutput


class CrossEntropyLabelSmooth(nn.Module):
    """The strong baseline's label-smoothed cross entropy.

    Its targets ``(1 - epsilon) * one_hot + epsilon / num_classes`` are exactly torch's
    ``label_smoothing``, so the number of classes comes from the logits and follows the classifier
    when it is rebuilt each cycle.
    """

    def __init__(self, epsilon: float = 0.1) -> None:
        super().__init__()
        if not 0 <= epsilon < 1:
            raise ValueError(f"epsilon={epsilon} must be in [0, 1): set loss.label_smoothing accordingly")
        self.epsilon = epsilon

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=self.epsilon)


def euclidean_distances(features: torch.Tensor) -> torch.Tensor:
    """Pairwise distances; the clamp keeps the gradient of sqrt finite on the diagonal."""
    squared = features.pow(2).sum(dim=1, keepdim=True)
    return (squared + squared.t() - 2 * features @ features.t()).clamp(min=1e-12).sqrt()


class TripletLoss(nn.Module):
    """Batch-hard triplet loss: per anchor, the farthest positive and the closest negative."""

    def __init__(self, margin: float = 0.3) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"margin={margin} must be >= 0: set loss.triplet_margin accordingly")
        self.margin = margin

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        distances = euclidean_distances(features.float())
        same_identity = targets.unsqueeze(0) == targets.unsqueeze(1)
        hardest_positive = distances.masked_fill(~same_identity, float("-inf")).amax(dim=1)
        # An anchor without negatives gets +inf here and contributes zero loss.
        hardest_negative = distances.masked_fill(same_identity, float("inf")).amin(dim=1)
        return F.margin_ranking_loss(
            hardest_negative, hardest_positive, torch.ones_like(hardest_positive), margin=self.margin
        )


class CenterLoss(nn.Module):
    """1/2 * mean over the batch of ||f_j - c_{y_j}||^2; the centres are ULA's identity templates.

    The centres start as random unit vectors because the loss is applied to L2-normalised features
    (see ``ReIDLoss``); ``set_centers`` loads the templates of the current cycle.
    """

    def __init__(self, num_classes: int, feat_dim: int) -> None:
        super().__init__()
        self.centers = nn.Parameter(F.normalize(torch.randn(num_classes, feat_dim), dim=1))

    @torch.no_grad()
    def set_centers(self, templates: torch.Tensor) -> None:
        """In place, so an optimizer that holds ``centers`` keeps working; build a new loss for a new K."""
        if templates.shape != self.centers.shape:
            raise ValueError(
                f"templates have shape {tuple(templates.shape)}, the centres {tuple(self.centers.shape)}: "
                "build the loss with num_classes equal to the number of templates"
            )
        self.centers.copy_(templates)

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return 0.5 * (features - self.centers[targets]).pow(2).sum(dim=1).mean()


class ReIDLoss(nn.Module):
    """ID loss on the logits, triplet loss on the pooled feature, centre loss on the test feature.

    The centre loss sees the L2-normalised test feature (after BNNeck) because its centres ARE the ULA
    templates, which are cluster means of L2-normalised after-BN features (docs/method.md 8): features and
    centres then live in the same space.
    """

    def __init__(self, cfg: LossConfig, num_classes: int, feat_dim: int) -> None:
        super().__init__()
        self.id_loss = CrossEntropyLabelSmooth(cfg.label_smoothing)
        self.triplet = TripletLoss(cfg.triplet_margin)
        self.center = CenterLoss(num_classes, feat_dim)
        self.center_weight = cfg.center_weight

    def forward(self, output: ReIDOutput, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        loss_id = self.id_loss(output.logits, targets)
        loss_triplet = self.triplet(output.global_feat, targets)
        loss_center = self.center(F.normalize(output.bn_feat.float(), dim=1), targets)
        total = loss_id + loss_triplet + self.center_weight * loss_center
        parts = {
            "loss_id": loss_id.item(),
            "loss_triplet": loss_triplet.item(),
            "loss_center": loss_center.item(),
            "loss_total": total.item(),
        }
        return total, parts

"""A cluster memory (Cluster Contrast, Dai et al.; alibaba/cluster-contrast-reid ``clustercontrast/models/cm.py``):
the alternative to the paper's cross-entropy on a template classifier (``adapt.loss=cluster_memory``,
docs/method.md section 10).

The memory holds one L2-normalised centroid per pseudo-label class. It is built from a cycle's clustering (the
ULA templates, the normalised mean features of the classes) and so rebuilt whenever the labels change; within a
cycle each training feature pulls its class's centroid after the batch's loss is computed. The loss is InfoNCE
over the centroids: a cross-entropy whose logits are the cosine similarities to every centroid over a
temperature, so a feature is drawn to its own class's centroid and pushed from all the others.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reidmodel.config import MemoryConfig
from reidmodel.losses import TripletLoss
from reidmodel.model.reid_net import ReIDOutput


class ClusterMemory(nn.Module):
    """Centroids ``[K, D]`` (a buffer: moved by the update rule, never by the optimiser)."""

    def __init__(self, centroids: torch.Tensor, momentum: float, temperature: float) -> None:
        super().__init__()
        if centroids.dim() != 2 or len(centroids) == 0:
            raise ValueError(f"centroids must be [K, D] with K >= 1, got shape {tuple(centroids.shape)}")
        if not 0 <= momentum < 1 or temperature <= 0:
            raise ValueError(f"momentum={momentum} must be in [0, 1) and temperature={temperature} > 0: "
                             "set memory.momentum and memory.temperature accordingly")
        self.register_buffer("centroids", F.normalize(centroids.detach().float(), dim=1).clone())
        self.momentum, self.temperature = momentum, temperature

    def loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """InfoNCE: ``-log softmax(f . c / tau)[y]`` averaged over the batch, f the L2-normalised features."""
        # A copy: ``update`` moves the centroids in place before this loss is backpropagated.
        logits = F.normalize(features, dim=1) @ self.centroids.clone().t() / self.temperature
        return F.cross_entropy(logits, labels)

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Per sample, in batch order: ``c_y := normalise(m c_y + (1 - m) f)``, f L2-normalised (cm.py's rule;
        m is the weight of the old centroid)."""
        for feature, label in zip(F.normalize(features.float(), dim=1), labels.tolist(), strict=True):
            centroid = self.centroids[label].mul_(self.momentum).add_(feature, alpha=1 - self.momentum)
            centroid.div_(centroid.norm())


class ClusterMemoryLoss(nn.Module):
    """The fine-tuning loss of ``adapt.loss=cluster_memory``: InfoNCE on the test feature ``f_i`` (the feature
    ULA clusters and the templates average), plus, with ``memory.triplet``, the batch-hard triplet loss on
    ``f_t`` as in the paper's loss. Called as ``ReIDLoss`` is: ``(output, labels) -> (loss, parts)``; the InfoNCE
    is reported as the identity loss (``loss_id``), which it replaces."""

    def __init__(self, templates: torch.Tensor, cfg: MemoryConfig, triplet_margin: float) -> None:
        super().__init__()
        self.memory = ClusterMemory(templates, cfg.momentum, cfg.temperature)
        self.triplet = TripletLoss(triplet_margin) if cfg.triplet else None

    def forward(self, output: ReIDOutput, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        loss_id = self.memory.loss(output.bn_feat.float(), labels)
        # The update follows the loss: the batch is scored against the centroids it has not yet moved (cm.py
        # updates in its backward pass).
        self.memory.update(output.bn_feat.detach(), labels)
        parts = {"loss_id": loss_id.item()}
        total = loss_id
        if self.triplet is not None:
            loss_triplet = self.triplet(output.global_feat, labels)
            total = total + loss_triplet
            parts["loss_triplet"] = loss_triplet.item()
        parts["loss_total"] = total.item()
        return total, parts

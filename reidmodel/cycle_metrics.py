"""The metrics ``reidmodel.pipeline.run_experiment`` reports per cycle: one declaration of each name, its display
label, its format and which target labels it reads, read by ULA, the pipeline, the CLI, tracking and the report.
Importable without torch so that a study can check its search metric against it before anything starts.

The target domain is unlabelled by definition, so every metric says what it reads of the target's labels
(``target_labels``): "none" (label-free: a user with an unlabelled target can select on it), "validation" (the
optional labelled validation identities held out of the target's training set, ``data.target_val_ids``) or
"oracle" (the target's test split, or the true identities of its training images: selecting on these is
selecting on the answer)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Literal, get_args

from reidmodel.messages import suggest

PERCENT, FRACTION, COUNT, REAL = ".1f", ".3f", ".0f", ".4g"
MISSING = "–"  # the cell of a value not measured (ULA's at cycle 0, a metric the paper does not print)
TargetLabels = Literal["none", "validation", "oracle"]
FREE, VALIDATION, ORACLE = get_args(TargetLabels)
Better = Literal["higher", "lower"]
HIGHER, LOWER = get_args(Better)


@dataclass(frozen=True)
class Metric:
    name: str  # key in a cycle's metrics dict
    label: str  # short display name for column headers
    fmt: str  # format spec for report cells
    help: str  # one line: what it measures
    target_labels: TargetLabels  # what it reads of the target's labels (module docstring)
    # Which way a better model moves it, for the metrics a model may be chosen on (evaluations, losses, validators);
    # None for counts, settings and times.
    better: Better | None = None

    def __post_init__(self) -> None:
        if self.target_labels not in get_args(TargetLabels):
            raise ValueError(f"metric {self.name!r}: target_labels={self.target_labels!r} is not one of "
                             f"{', '.join(get_args(TargetLabels))}")
        if self.better not in (None, *get_args(Better)):
            raise ValueError(f"metric {self.name!r}: better={self.better!r} is not one of higher, lower or None")

    @property
    def reads_target_labels(self) -> bool:
        return self.target_labels != "none"

    def format(self, value) -> str:
        """The cell text; MISSING for a value the cycle did not measure (None or NaN)."""
        if value is None or (isinstance(value, numbers.Real) and math.isnan(value)):
            return MISSING
        return format(value, self.fmt)


_CYCLE = (
    Metric("cycle", "cycle", COUNT, "adaptation cycle; 0 is the source-only model right after pre-training", FREE),
    Metric("epoch", "epoch", COUNT, "training epochs so far, source pre-training included", FREE),
    Metric("time_s", "time (s)", REAL, "seconds the cycle took: ULA, fine-tuning, KD merge, evaluation, validators", FREE),
)
# Per domain (target_*, source_*), in percent and in column order as in the paper's tables; R<k> is CMC rank k.
_EVAL = {
    "R1": "CMC rank-1: queries whose nearest gallery image is a true match (%)",
    "R5": "CMC rank-5 (%)",
    "R10": "CMC rank-10 (%)",
    "mAP": "mean average precision over the queries (%)",
    "mINP": "mean inverse negative penalty: how early the hardest true match is ranked (%)",
}
# The source's query/gallery identities are not among its training identities: a source *validation* set.
_DOMAINS = {"target": ("unlabelled target domain's test split", ORACLE),
            "source": ("labelled source domain's test split", FREE)}
_ULA = (
    Metric("ula_num_clusters", "clusters", COUNT, "DBSCAN clusters found in the target features", FREE),
    Metric("ula_num_classes", "classes", COUNT, "base classes kept: the min of K and the clusters found", FREE),
    Metric("ula_requested_classes", "K", COUNT, "K, the number of base classes asked for", FREE),
    Metric("ula_num_labelled", "labelled", COUNT, "target images that got a pseudo label", FREE),
    Metric("ula_labelled_fraction", "labelled fraction", FRACTION, "fraction of target images with a pseudo label",
           FREE),
    Metric("ula_precision", "precision", FRACTION, "pairwise precision of the pseudo labels against the true ids",
           ORACLE),
    Metric("ula_recall", "recall", FRACTION, "pairwise recall of the pseudo labels against the true ids", ORACLE),
    Metric("ula_purity", "purity", FRACTION, "share of labelled images in their class's majority identity", ORACLE),
    Metric("ula_nmi", "NMI", FRACTION, "normalised mutual information of pseudo labels and true ids", ORACLE),
    Metric("ula_degenerate", "degenerate", COUNT, "1 when the clustering collapsed and fine-tuning was skipped",
           FREE),
    Metric("ula_eps", "eps", FRACTION, "DBSCAN neighbourhood radius used", FREE),
)
_LOSS = (
    Metric("loss_total", "loss", REAL, "mean training loss of the last epoch before this evaluation", FREE, LOWER),
    Metric("loss_id", "ID loss", REAL, "identity part of the last epoch's loss (cross-entropy; InfoNCE with adapt.loss=cluster_memory)",
           FREE, LOWER),
    Metric("loss_triplet", "triplet loss", REAL, "triplet part of the last epoch's loss", FREE, LOWER),
    Metric("loss_center", "center loss", REAL, "centre part of the last epoch's loss (before loss.center_weight)",
           FREE, LOWER),
)
# reidmodel.validators: the model's on a sample of the target training images after the cycle, the clustering's
# on ULA's step at the cycle's start (DEV: with the source queries, when eval.eval_source is on). Higher is better
# for each but DEV and the noise fraction (``better``).
_MODEL_VALIDATORS = (
    Metric("snd", "SND", REAL, "soft neighbourhood density of the target training features (higher: denser)", FREE,
           HIGHER),
    Metric("class_ami", "ClassAMI", FRACTION, "AMI of the classifier's predictions and a k-means of the features",
           FREE, HIGHER),
    Metric("info_max", "IM", REAL, "information maximisation: prediction diversity minus mean prediction entropy",
           FREE, HIGHER),
    Metric("info_max_ratio", "IM / log K", FRACTION, "IM over its ceiling log K, K the classifier's classes: IM "
           "without its growth with K", FREE, HIGHER),
    Metric("bnm", "BNM", REAL, "batch nuclear norm of the classifier's softmax over target images, / images", FREE,
           HIGHER),
    Metric("dev", "DEV", REAL, "deep embedded validation: source queries' 1 - AP weighted by how target-like they are",
           FREE, LOWER),
)
_CLUSTERING_VALIDATORS = (
    Metric("ula_silhouette", "silhouette", FRACTION, "silhouette of the DBSCAN clusters on the distance clustered on",
           FREE, HIGHER),
    Metric("ula_noise_fraction", "noise", FRACTION, "share of target images DBSCAN left as noise", FREE, LOWER),
    Metric("pseudo_label_stability", "stability", FRACTION, "AMI of this and the previous cycle's pseudo labels",
           FREE, HIGHER),
)
_TARGET_VAL = tuple(
    Metric(f"target_val_{key}", f"target val {key}", PERCENT,
           f"{_EVAL[key]}, labelled target identities held out of ULA's pool (data.target_val_ids)", VALIDATION,
           HIGHER)
    for key in ("mAP", "R1")
)


def _eval_metrics(domain: str) -> list[Metric]:
    where, labels = _DOMAINS[domain]
    return [Metric(f"{domain}_{key}", f"{domain} {key}", PERCENT, f"{text}, {where}", labels, HIGHER)
            for key, text in _EVAL.items()]


METRICS: dict[str, Metric] = {
    m.name: m for m in (*_CYCLE, *_eval_metrics("target"), *_eval_metrics("source"), *_ULA, *_LOSS,
                        *_MODEL_VALIDATORS, *_CLUSTERING_VALIDATORS, *_TARGET_VAL)
}
CYCLE_KEYS = tuple(m.name for m in _CYCLE)
EVAL_KEYS = tuple(_EVAL)
ULA_KEYS = tuple(m.name.removeprefix("ula_") for m in _ULA)  # keys of ULAResult.diagnostics
LOSS_KEYS = tuple(m.name for m in _LOSS)
VALIDATOR_KEYS = tuple(m.name for m in (*_MODEL_VALIDATORS, *_CLUSTERING_VALIDATORS))
TARGET_VAL_KEYS = tuple(m.name.removeprefix("target_val_") for m in _TARGET_VAL)


def cmc_rank(key: str) -> int | None:
    """k of an evaluation key R<k>; None for mAP and mINP."""
    return int(key[1:]) if key.startswith("R") else None


def cycle_metric_names() -> list[str]:
    """Every metric name a cycle reports: what a study may optimise or schedule on."""
    return list(METRICS)


def label_free_metric_names() -> list[str]:
    """The metrics that read no target label: the ones a search may select on without the target's answers."""
    return [name for name, m in METRICS.items() if not m.reads_target_labels]


def metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"no cycle metric {name!r}: {suggest(name, METRICS)}") from None

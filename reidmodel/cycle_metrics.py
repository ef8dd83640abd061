"""The metrics ``reidmodel.pipeline.run_experiment`` reports per cycle: one declaration of each name, its display
label and its format, read by ULA, the pipeline, the CLI, tracking and the report. Importable without torch so that
a study can check its search metric against it before anything starts."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from reidmodel.messages import suggest

PERCENT, FRACTION, COUNT, REAL = ".1f", ".3f", ".0f", ".4g"


@dataclass(frozen=True)
class Metric:
    name: str  # key in a cycle's metrics dict
    label: str  # short display name for column headers
    fmt: str  # format spec for report cells
    help: str  # one line: what it measures

    def format(self, value) -> str:
        """The cell text; "-" for a value the cycle did not measure (None or NaN)."""
        if value is None or (isinstance(value, numbers.Real) and math.isnan(value)):
            return "-"
        return format(value, self.fmt)


_CYCLE = (
    Metric("cycle", "cycle", COUNT, "adaptation cycle; 0 is the source-only model right after pre-training"),
    Metric("epoch", "epoch", COUNT, "training epochs so far, source pre-training included"),
    Metric("time_s", "time (s)", REAL, "seconds the cycle took: ULA, fine-tuning, KD merge and evaluation"),
)
# Per domain (target_*, source_*), in percent as in the paper's tables.
_EVAL = {
    "mAP": "mean average precision over the queries (%)",
    "R1": "CMC rank-1: queries whose nearest gallery image is a true match (%)",
    "R5": "CMC rank-5 (%)",
    "R10": "CMC rank-10 (%)",
    "mINP": "mean inverse negative penalty: how early the hardest true match is ranked (%)",
}
_DOMAINS = {"target": "unlabelled target domain", "source": "labelled source domain"}
_ULA = (
    Metric("ula_num_clusters", "clusters", COUNT, "DBSCAN clusters found in the target features"),
    Metric("ula_num_classes", "classes", COUNT, "base classes kept: the min of K and the clusters found"),
    Metric("ula_requested_classes", "K", COUNT, "K, the number of base classes asked for"),
    Metric("ula_num_labelled", "labelled", COUNT, "target images that got a pseudo label"),
    Metric("ula_labelled_fraction", "labelled fraction", FRACTION, "fraction of target images with a pseudo label"),
    Metric("ula_precision", "precision", FRACTION, "pairwise precision of the pseudo labels against the true ids"),
    Metric("ula_recall", "recall", FRACTION, "pairwise recall of the pseudo labels against the true ids"),
    Metric("ula_purity", "purity", FRACTION, "share of labelled images in their class's majority identity"),
    Metric("ula_nmi", "NMI", FRACTION, "normalised mutual information of pseudo labels and true ids"),
    Metric("ula_degenerate", "degenerate", COUNT, "1 when the clustering collapsed and fine-tuning was skipped"),
    Metric("ula_eps", "eps", FRACTION, "DBSCAN neighbourhood radius used"),
)
_LOSS = (
    Metric("loss_total", "loss", REAL, "mean training loss of the last epoch before this evaluation"),
    Metric("loss_id", "ID loss", REAL, "identity part of the last epoch's loss (cross-entropy; InfoNCE with adapt.loss=cluster_memory)"),
    Metric("loss_triplet", "triplet loss", REAL, "triplet part of the last epoch's loss"),
    Metric("loss_center", "center loss", REAL, "centre part of the last epoch's loss (before loss.center_weight)"),
)


def _eval_metrics(domain: str) -> list[Metric]:
    return [
        Metric(f"{domain}_{key}", f"{domain} {key}", PERCENT, f"{text}, {_DOMAINS[domain]}")
        for key, text in _EVAL.items()
    ]


METRICS: dict[str, Metric] = {
    m.name: m for m in (*_CYCLE, *_eval_metrics("target"), *_eval_metrics("source"), *_ULA, *_LOSS)
}
CYCLE_KEYS = tuple(m.name for m in _CYCLE)
EVAL_KEYS = tuple(_EVAL)
ULA_KEYS = tuple(m.name.removeprefix("ula_") for m in _ULA)  # keys of ULAResult.diagnostics
LOSS_KEYS = tuple(m.name for m in _LOSS)


def cycle_metric_names() -> list[str]:
    """Every metric name a cycle reports: what a study may optimise or schedule on."""
    return list(METRICS)


def metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"no cycle metric {name!r}: {suggest(name, METRICS)}") from None

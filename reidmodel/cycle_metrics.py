"""The names of the metrics ``reidmodel.pipeline.run_experiment`` reports per cycle, importable without torch so
that a study can check its search metric against them before anything starts."""

LOSS_KEYS = ("loss_total", "loss_id", "loss_triplet", "loss_center")
ULA_KEYS = (
    "num_clusters",
    "num_classes",
    "requested_classes",
    "num_labelled",
    "labelled_fraction",
    "precision",
    "recall",
    "purity",
    "nmi",
    "degenerate",
    "eps",
)
EVAL_KEYS = ("mAP", "R1", "R5", "R10", "mINP")  # per domain, as target_* and source_*
CYCLE_KEYS = ("cycle", "epoch", "time_s")


def cycle_metric_names() -> list[str]:
    """Every metric name a cycle reports: what a study may optimise or schedule on."""
    return [
        *CYCLE_KEYS,
        *(f"{domain}_{key}" for domain in ("target", "source") for key in EVAL_KEYS),
        *(f"ula_{key}" for key in ULA_KEYS),
        *LOSS_KEYS,
    ]

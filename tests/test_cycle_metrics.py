import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reidmodel.config import ULAConfig
from reidmodel.cycle_metrics import (
    EVAL_KEYS,
    LOSS_KEYS,
    METRICS,
    TARGET_VAL_KEYS,
    ULA_KEYS,
    VALIDATOR_KEYS,
    cycle_metric_names,
    metric,
)
from reidmodel.ula import label_adaptation


def test_names_in_report_order_and_key_tuples_derived_from_them():
    names = cycle_metric_names()
    assert names == list(METRICS) and names[:3] == ["cycle", "epoch", "time_s"]
    assert names[3:13] == [f"{domain}_{key}" for domain in ("target", "source") for key in EVAL_KEYS]
    assert names[13:] == ([f"ula_{key}" for key in ULA_KEYS] + list(LOSS_KEYS) + list(VALIDATOR_KEYS)
                          + [f"target_val_{key}" for key in TARGET_VAL_KEYS])
    assert all(m.name == name and m.label and m.help for name, m in METRICS.items())


def test_ula_labels_and_digits_are_the_report_columns():
    labels = {"ula_num_clusters": "clusters", "ula_requested_classes": "K", "ula_num_classes": "classes",
              "ula_num_labelled": "labelled", "ula_labelled_fraction": "labelled fraction",
              "ula_precision": "precision", "ula_recall": "recall", "ula_degenerate": "degenerate",
              "target_mAP": "target mAP"}
    assert {name: metric(name).label for name in labels} == labels
    assert metric("ula_num_labelled").format(73.0) == "73" and metric("ula_degenerate").format(0.0) == "0"
    assert metric("ula_precision").format(0.29482) == "0.295" and metric("target_mAP").format(39.2196) == "39.2"
    assert metric("loss_total").format(4.697789) == "4.698" and metric("cycle").format(2) == "2"


@pytest.mark.parametrize("missing", [None, math.nan, np.float32("nan")])
def test_unmeasured_value_is_a_dash(missing):
    assert metric("source_mAP").format(missing) == "–"  # the one missing-value marker (MISSING), as report and tables print it


def test_unknown_name_suggests_the_closest():
    with pytest.raises(KeyError, match="did you mean target_mAP"):
        metric("target_mAp")


def test_ula_diagnostics_hold_every_reported_key():
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(c, 0.05, size=(6, 4)) for c in (0.0, 3.0)]).astype(np.float32)
    cfg = ULAConfig(eps_mode="fixed", eps=0.5, min_samples=2, min_labelled_fraction=0.0)
    diagnostics = label_adaptation(features, cfg, 2, true_ids=np.repeat([0, 1], 6)).diagnostics
    assert set(ULA_KEYS) <= set(diagnostics)


def test_importable_without_torch():
    code = "import sys, reidmodel.cycle_metrics; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent).returncode == 0


def test_each_metric_a_model_may_be_chosen_on_declares_which_way_is_better():
    assert {name: metric(name).better for name in VALIDATOR_KEYS} == {
        name: "lower" if name in ("dev", "ula_noise_fraction") else "higher" for name in VALIDATOR_KEYS}
    assert {metric(name).better for name in LOSS_KEYS} == {"lower"}
    assert metric("target_mAP").better == metric("source_mAP").better == metric("target_val_mAP").better == "higher"
    assert metric("ula_num_clusters").better is None and metric("time_s").better is None
    from reidmodel.cycle_metrics import Metric

    with pytest.raises(ValueError, match="better='up' is not one of higher, lower or None"):
        Metric("x", "x", ".1f", "x", "none", "up")

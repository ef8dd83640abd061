"""The paper preset's cost arithmetic (benchmarks/paper_cost.py) and the GPU script's refusal without a GPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.paper_cost import cost_rows, epoch_images, gpu_rows
from reidmodel.config import preset

REPO = Path(__file__).resolve().parent.parent


def test_an_epoch_is_the_training_set_less_the_sampler_leftovers():
    for dataset, images in (("market1501", 12936), ("dukemtmc", 16522)):
        epoch = epoch_images(dataset)
        assert epoch % 64 == 0 and 0.85 * images < epoch <= images


def test_the_schedule_cost_adds_up_from_the_measured_rates():
    ula = {"seconds": 10.0}
    measured = {"step": {"bare": 64.0}, "extract": 100.0,
                "ula": {f"{name}_euclidean": ula for name in ("market1501", "dukemtmc")}}
    market = cost_rows(measured, preset("paper"))[0]
    assert market[:2] == ["market1501", str(epoch_images("market1501"))]
    epoch = epoch_images("market1501") / 64.0
    cycle = 12936 / 100 + 10 + 5 * epoch + (3368 + 19732) / 100
    assert market[6] == f"{cycle / 60:.1f} min" and market[7] == f"{(120 * epoch + 16 * cycle) / 3600:.1f} h"


def test_every_gpu_row_says_it_was_not_measured():
    rows = [line for line in gpu_rows() if line.startswith("| ") and "figure" not in line]
    assert len(rows) == 5 and all("not measured: no GPU lent" in row for row in rows)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_the_gpu_script_refuses_without_a_gpu_in_one_line():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "benchmarks/gpu_trial.py"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr == "error: no CUDA device: run this on a machine with a GPU\n"

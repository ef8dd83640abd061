"""Shared fixtures: one tiny synthetic benchmark per test session, and a tiny experiment config."""

import pytest
import torch

from reidmodel.config import apply_overrides, preset

torch.set_num_threads(1)

TINY = {
    "data.synthetic_ids": 8,
    "data.height": 32,
    "data.width": 16,
    "data.batch_size": 16,
    "data.num_instances": 4,
    "source.epochs": 2,
    "source.warmup_epochs": 0,
    "adapt.cycles": 2,
    "adapt.cycle_epochs": 1,
    "ula.eps_mode": "quantile",
    "ula.eps_quantile": 0.05,
    "ula.min_samples": 2,
    "ula.min_labelled_fraction": 0.0,
    "ula.max_cluster_fraction": 1.0,
    "eval.max_rank": 10,
    "runtime.threads": 1,
}


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory):
    """The cache folder of a tiny synthetic benchmark, generated once for the whole test session."""
    from reidmodel.data.synthetic import ensure_synthetic

    cache = tmp_path_factory.mktemp("synthetic")
    ensure_synthetic(cache, num_ids=TINY["data.synthetic_ids"], seed=0)
    return cache


@pytest.fixture
def tiny_config(synthetic_cache):
    return apply_overrides(preset("cpu"), {**TINY, "data.synthetic_cache": str(synthetic_cache)})

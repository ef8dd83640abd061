"""Item 5: deterministic errors (config, data, divergence) are not retried; transient ones are, from the last
cycle checkpoint."""

import pytest

from reidmodel.config import ConfigError
from reidmodel.data import DatasetError
from reidmodel.engine import DivergenceError
from study.outcome import is_deterministic

from .helpers import runs


@pytest.mark.parametrize("error, deterministic", [
    (ConfigError("x"), True), (DatasetError("x"), True), (DivergenceError("x"), True), (KeyError("x"), True),
    (OSError("x"), False), (ConnectionError("x"), False), (RuntimeError("CUDA out of memory"), False),
])
def test_errors_are_sorted(error, deterministic):
    assert is_deterministic(error) is deterministic


@pytest.mark.slow
def test_transient_error_retried_from_the_last_cycle_deterministic_not(faulty_study):
    results = faulty_study["results"]
    client, _, children = runs(results, "faulty")
    trials = {c.data.tags["variant"]: c for c in children}
    transient = trials["ULA"]
    # The injected OSError at cycle 1 came once; Ray's retry resumed from cycle 0's checkpoint: cycle 0 ran once.
    visits = faulty_study["fault_log"].read_text().split()[1::2]
    assert visits == ["0", "1", "1"]
    assert transient.info.status == "FINISHED"
    assert transient.data.tags["retried_after"] == "OSError: injected transient fault at cycle 1"
    assert "error" not in transient.data.tags
    assert sorted(m.step for m in client.get_metric_history(transient.info.run_id, "target_mAP")) == [0, 1]

    deterministic = trials["diverges"]
    assert deterministic.data.tags["error_kind"] == "deterministic" and deterministic.data.tags["retry"] == "no"
    (error_file,) = (results / "ray" / "faulty").glob("*diverges*/error.txt")
    failures = error_file.read_text().split("Failure # ")[1:]
    # Ray's one retry stopped at once, before any data or training: the divergence cost its pre-training once.
    assert "DivergenceError" in failures[0] and "RetryRefused: not retried" in failures[1]
    assert "DivergenceError" in deterministic.data.tags["error"]

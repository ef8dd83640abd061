"""A search that ASHA prunes: MLflow holds every cycle Ray received, and stopped trials are not FAILED."""

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.tiny_studies import run_study, tiny_search

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def asha_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("asha")
    space = tiny_search(
        tmp, "asha_search",
        {"kd.mu": {"type": "uniform", "low": 0.05, "high": 1.0},
         "adapt.lr": {"type": "loguniform", "low": 1e-6, "high": 1e-3}},
        {"sampler": "random", "num_samples": 6, "metric": "target_mAP", "mode": "max", "seed": 3},
        scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2},
        # One trial at a time: ASHA's cut-off at a rung is set by the trials that reached it first, so with two at
        # once whether any trial is pruned would depend on which of them reports first.
        resources={"cpus_per_trial": 1, "max_concurrent": 1})
    space.write_text(space.read_text().replace("adapt.cycles: 1", "adapt.cycles: 3"))
    results = tmp / "results"
    run_study(space, results)
    return results


def ray_results(results: Path) -> dict[str, list[dict]]:
    """Trial name -> the results Ray received, from each trial folder's result.json."""
    received = {}
    for path in (results / "ray" / "asha_search").glob("*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            received[rows[0]["trial_id"]] = rows
    return received


def test_mlflow_holds_every_cycle_ray_received_with_honest_statuses(asha_study):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{asha_study / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("asha_search")
    children = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    received = ray_results(asha_study)
    assert len(children) == len(received) == 6
    outcomes = set()
    for child in children:
        rays = received[child.data.tags["trial_id"]]
        history = sorted(client.get_metric_history(child.info.run_id, "target_mAP"), key=lambda m: m.step)
        assert [m.step for m in history] == [r["cycle"] for r in rays]
        assert [m.value for m in history] == pytest.approx([r["target_mAP"] for r in rays])
        if rays[-1]["cycle"] == 3:
            assert child.info.status == "FINISHED"
            outcomes.add("finished")
        else:
            assert child.info.status == "KILLED"
            assert child.data.tags["stop_reason"] == "asha"
            assert int(child.data.tags["stopped_at_cycle"]) == rays[-1]["cycle"]
            outcomes.add("stopped")
    assert outcomes == {"finished", "stopped"}


def test_report_final_is_the_last_cycle_ray_received(asha_study):
    trials = pd.read_csv(asha_study / "asha_search" / "trials.csv")
    received = ray_results(asha_study)
    for _, row in trials.iterrows():
        last = received[row["trial_id"]][-1]
        assert row["final_cycle"] == last["cycle"]
        assert row["final_target_mAP"] == pytest.approx(last["target_mAP"])
    readme = (asha_study / "asha_search" / "README.md").read_text()
    assert "stopped early (asha)" in readme and "FAILED" not in readme and "None" not in readme

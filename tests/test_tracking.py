import math
import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow import MlflowClient  # noqa: E402
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH  # noqa: E402

from study.paths import default_tracking_uri  # noqa: E402
from study.tracking import StudyTracker, TrialTracker, git_commit  # noqa: E402


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    """One SQLite store for the module: MLflow's first migration of a fresh database takes seconds."""
    uri = default_tracking_uri(tmp_path_factory.mktemp("results"))
    MlflowClient(uri).search_experiments()
    return uri


def history(path: Path, rows: list[tuple]) -> Path:
    lines = ["stage,cycle,epoch,loss_total,loss_id,loss_triplet,loss_center"]
    lines += [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def metric_steps(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_default_tracking_uri_is_absolute_sqlite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri(Path("results")) == f"sqlite:///{tmp_path.resolve()}/results/mlflow.db"


def test_git_commit_is_a_hash_or_none():
    commit = git_commit()
    assert commit is None or (len(commit) == 40 and int(commit, 16) >= 0)


def test_parent_and_child_runs(tracking_uri, tmp_path):
    client = MlflowClient(tracking_uri)
    study = StudyTracker(tracking_uri, "nesting")
    parent_id = study.start({"ula": {"eps": [0.6, 0.8]}}, {"samples": 2, "results_dir": tmp_path}, resume=False)
    assert client.get_experiment_by_name("nesting").artifact_location.endswith("/mlartifacts")

    trial = TrialTracker(tracking_uri, parent_id, "trial_00000", "nesting")
    long_value = "x" * (MAX_PARAM_VAL_LENGTH + 100)
    trial.start({"ula": {"eps": 0.8, "min_samples": 4}, "model": {"attention": ["conv4"]}, "note": long_value},
                {"variant": "ULA(750)", "direction": "synthetic_duke->synthetic_market", "cache_hit": True})
    trial.log_cycle({"cycle": 0, "target_mAP": 20.5, "ula_precision": math.nan, "loss_total": 3, "note": "x"})
    trial.log_cycle({"cycle": 1.0, "target_mAP": 25.25, "ula_precision": 0.875, "loss_total": 2.5,
                     "ula_degenerate": True})
    config = tmp_path / "config.yaml"
    config.write_text("seed: 0\n")
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "map.png").write_bytes(b"png")
    trial.log_artifacts([config, plots])
    trial.end()
    study.finish()

    child = client.get_run(trial.run_id)
    assert child.info.run_name == "trial_00000" and child.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == parent_id
    assert child.data.tags["variant"] == "ULA(750)" and child.data.tags["cache_hit"] == "True"
    assert child.data.params["ula.eps"] == "0.8" and child.data.params["ula.min_samples"] == "4"
    assert child.data.params["model.attention"] == '["conv4"]'
    assert len(child.data.params["note"]) == MAX_PARAM_VAL_LENGTH and child.data.params["note"].endswith("...")
    assert metric_steps(client, trial.run_id, "target_mAP") == [(0, 20.5), (1, 25.25)]
    assert metric_steps(client, trial.run_id, "ula_precision") == [(1, 0.875)]  # NaN at cycle 0 skipped
    assert metric_steps(client, trial.run_id, "loss_total") == [(0, 3.0), (1, 2.5)]
    assert metric_steps(client, trial.run_id, "ula_degenerate") == [(1, 1.0)]
    assert "note" not in client.get_run(trial.run_id).data.metrics
    assert sorted(a.path for a in client.list_artifacts(trial.run_id)) == ["config.yaml", "plots"]
    assert [a.path for a in client.list_artifacts(trial.run_id, "plots")] == ["plots/map.png"]

    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.params["space.ula.eps"] == "[0.6, 0.8]"
    assert parent.data.params["cli.samples"] == "2" and parent.data.params["cli.results_dir"] == str(tmp_path)
    assert sorted(a.path for a in client.list_artifacts(parent_id)) == ["cli_args.json", "search_space.json"]


def test_resume_reuses_parent_and_child(tracking_uri):
    client = MlflowClient(tracking_uri)
    parent_id = StudyTracker(tracking_uri, "resume").start({"a": 1}, {}, resume=False)
    first = TrialTracker(tracking_uri, parent_id, "trial_1", "resume")
    first.start({"seed": 0}, {"cache_hit": False})
    first.log_cycle({"cycle": 0, "target_mAP": 10.0})
    first.end("FAILED")

    again = StudyTracker(tracking_uri, "resume")
    assert again.start({"a": 1}, {}, resume=True) == parent_id
    second = TrialTracker(tracking_uri, parent_id, "trial_1", "resume")
    second.start({"seed": 0}, {"cache_hit": True})
    assert second.run_id == first.run_id
    assert client.get_run(second.run_id).info.status == "RUNNING"
    second.log_cycle({"cycle": 1, "target_mAP": 12.0})
    other = TrialTracker(tracking_uri, parent_id, "trial_2", "resume")
    other.start({"seed": 1}, {})
    assert other.run_id != first.run_id

    experiment_id = client.get_experiment_by_name("resume").experiment_id
    runs = client.search_runs([experiment_id])
    assert len(runs) == 3  # one parent, two trials: nothing duplicated
    assert client.get_run(first.run_id).data.tags["cache_hit"] == "True"
    assert metric_steps(client, first.run_id, "target_mAP") == [(0, 10.0), (1, 12.0)]

    fresh = StudyTracker(tracking_uri, "resume").start({"a": 1}, {}, resume=False)
    assert fresh != parent_id


def test_history_logging_is_idempotent(tracking_uri, tmp_path):
    client = MlflowClient(tracking_uri)
    parent_id = StudyTracker(tracking_uri, "history").start({}, {}, resume=False)
    trial = TrialTracker(tracking_uri, parent_id, "trial_h", "history")
    trial.start({}, {})
    csv_path = history(tmp_path / "history.csv", [("source", 0, 1, 5.0, 3.0, 1.5, 0.5),
                                                  ("source", 0, 2, 4.0, 2.5, 1.0, "")])
    trial.log_history(csv_path)
    trial.log_history(csv_path)
    assert metric_steps(client, trial.run_id, "epoch_loss_total") == [(0, 5.0), (1, 4.0)]
    assert metric_steps(client, trial.run_id, "epoch_loss_center") == [(0, 0.5)]

    # after a restart the checkpoint's history.csv holds the old rows plus the new ones
    history(csv_path, [("source", 0, 1, 5.0, 3.0, 1.5, 0.5), ("source", 0, 2, 4.0, 2.5, 1.0, ""),
                       ("adapt", 1, 1, 3.0, 2.0, 0.75, 0.25)])
    TrialTracker(tracking_uri, parent_id, "trial_h", "history").start({}, {})
    resumed = TrialTracker(tracking_uri, parent_id, "trial_h", "history")
    resumed.start({}, {})
    resumed.log_history(csv_path)
    assert metric_steps(client, trial.run_id, "epoch_loss_total") == [(0, 5.0), (1, 4.0), (2, 3.0)]
    assert metric_steps(client, trial.run_id, "epoch_loss_triplet") == [(0, 1.5), (1, 1.0), (2, 0.75)]
    assert "epoch_epoch" not in client.get_run(trial.run_id).data.metrics


def test_bad_input_messages(tracking_uri, tmp_path):
    with pytest.raises(ValueError, match="no MLflow experiment named 'missing'"):
        TrialTracker(tracking_uri, "0" * 32, "t", "missing").start({}, {})
    parent_id = StudyTracker(tracking_uri, "bad").start({}, {}, resume=False)
    trial = TrialTracker(tracking_uri, parent_id, "t", "bad")
    with pytest.raises(RuntimeError, match="call TrialTracker.start"):
        trial.log_cycle({"cycle": 0})
    trial.start({}, {})
    with pytest.raises(ValueError, match="'cycle' key"):
        trial.log_cycle({"target_mAP": 1.0})
    with pytest.raises(ValueError, match="'target_mAp' is not declared in reidmodel.cycle_metrics: did you mean "
                                         "target_mAP"):
        trial.log_cycle({"cycle": 0, "target_mAp": 1.0})
    with pytest.raises(FileNotFoundError, match="history.csv"):
        trial.log_history(tmp_path / "history.csv")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        trial.log_artifacts([tmp_path / "nothing.png"])


def test_close_open_trials_marks_only_running_children(tracking_uri):
    study = StudyTracker(tracking_uri, "closing")
    parent = study.start({"name": "closing"}, {}, resume=False)
    stopped = TrialTracker(tracking_uri, parent, "stopped_by_scheduler", "closing")
    stopped.start({"a": 1}, {})
    finished = TrialTracker(tracking_uri, parent, "finished", "closing")
    finished.start({"a": 2}, {})
    finished.end("FINISHED")
    assert study.close_open_trials() == 1
    client = MlflowClient(tracking_uri)
    assert client.get_run(stopped.run_id).info.status == "KILLED"
    assert client.get_run(finished.run_id).info.status == "FINISHED"
    assert study.close_open_trials() == 0

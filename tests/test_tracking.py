"""The driver's MLflow bookkeeping: the parent run, and each trial's child run as TrialLogger keeps it from Ray's
callback hooks, driven here with stand-in trials (no Ray running)."""

import math
import os
import pickle
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow import MlflowClient  # noqa: E402
from ray.tune import Checkpoint  # noqa: E402

from study.outcome import StudyOutcome  # noqa: E402
from study.paths import default_tracking_uri  # noqa: E402
from study.spaces import load_space  # noqa: E402
from study.tracking import StudyTracker, TrialLogger, find_experiment_id, git_commit  # noqa: E402
from study.trial import TrialConfigs  # noqa: E402
from tests.tiny_studies import fake_trial  # noqa: E402


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    """One SQLite store for the module: MLflow's first migration of a fresh database takes seconds."""
    uri = default_tracking_uri(tmp_path_factory.mktemp("results"))
    MlflowClient(uri).search_experiments()
    return uri


def checkpoint(folder: Path, history_rows: list[str]) -> Checkpoint:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "history.csv").write_text("\n".join(["stage,cycle,epoch,loss_total,loss_triplet", *history_rows]) + "\n")
    (folder / "cycles.csv").write_text("cycle,target_mAP\n0,20.5\n")
    (folder / "config.yaml").write_text("seed: 1\n")
    return Checkpoint.from_directory(str(folder))


def metric_steps(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def study(uri: str, name: str) -> tuple[StudyTracker, TrialLogger]:
    tracker = StudyTracker(uri, name)
    parent = tracker.start({"name": name, "ula": {"eps": [0.6, 0.8]}}, {"seeds": 2, "results_dir": Path("/r")},
                           resume=False)
    return tracker, TrialLogger(uri, parent, name, "asha", TrialConfigs())


def test_default_tracking_uri_is_absolute_sqlite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri(Path("results")) == f"sqlite:///{tmp_path.resolve()}/results/mlflow.db"


def test_git_commit_is_a_hash_or_none():
    commit = git_commit()
    assert commit is None or (len(commit) == 40 and int(commit, 16) >= 0)


def test_a_trial_run_from_start_to_end(tracking_uri, tmp_path):
    client = MlflowClient(tracking_uri)
    tracker, logger = study(tracking_uri, "nesting")
    assert client.get_experiment_by_name("nesting").artifact_location.endswith("/mlartifacts")
    trial = fake_trial("a1", last_result={"cycle": 2})
    logger.log_trial_start(trial)
    logger.log_trial_result(1, trial, {"cycle": 0, "target_mAP": 20.5, "ula_precision": math.nan, "loss_total": 3,
                                       "pretrain_cache": "miss", "pretrain_key": "abc", "training_iteration": 1})
    logger.log_trial_result(2, trial, {"cycle": 1, "target_mAP": 25.25, "ula_precision": 0.875,
                                       "ula_degenerate": True, "pretrain_cache": "miss", "pretrain_key": "abc",
                                       "machine": "AMD EPYC (AVX512 kernels), 1 thread(s), torch 2.14.1"})
    logger.on_checkpoint(2, [], trial, checkpoint(tmp_path / "c1", ["source,0,1,5.0,1.5", "adapt,1,1,4.0,"]))
    logger.log_trial_end(trial)
    tracker.finish()

    (child,) = tracker.trial_runs()
    run_id = child.info.run_id
    assert child.info.run_name == "ULA(750) | D->M | seed 1" and child.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == tracker.run_id and child.data.tags["trial_id"] == "a1"
    assert child.data.tags["trial_name"] == "train_trial_a1"
    assert child.data.tags["variant"] == "ULA(750)" and child.data.tags["pretrain_key"] == "abc"
    assert child.data.tags["machine"] == "AMD EPYC (AVX512 kernels), 1 thread(s), torch 2.14.1"
    assert "machine" not in child.data.metrics
    assert child.data.params["kd.enabled"] == "false" and child.data.params["adapt.cycles"] == "2"
    assert child.data.params["model.attention"] == "conv3+conv4+conv5"
    assert metric_steps(client, run_id, "target_mAP") == [(0, 20.5), (1, 25.25)]
    assert metric_steps(client, run_id, "ula_precision") == [(1, 0.875)]  # NaN at cycle 0 skipped
    assert metric_steps(client, run_id, "ula_degenerate") == [(1, 1.0)]
    assert "training_iteration" not in child.data.metrics  # Ray's own keys are not cycle metrics
    assert metric_steps(client, run_id, "epoch_loss_total") == [(0, 5.0), (1, 4.0)]
    assert metric_steps(client, run_id, "epoch_loss_triplet") == [(0, 1.5)]  # an empty cell is no value
    assert "epoch_epoch" not in child.data.metrics
    assert sorted(a.path for a in client.list_artifacts(run_id)) == ["config.yaml", "cycles.csv", "history.csv"]

    parent = client.get_run(tracker.run_id)
    assert parent.info.status == "FINISHED" and parent.data.params["space.ula.eps"] == "[0.6, 0.8]"
    assert parent.data.params["cli.seeds"] == "2" and parent.data.params["cli.results_dir"] == "/r"
    assert sorted(a.path for a in client.list_artifacts(tracker.run_id)) == ["cli_args.json", "search_space.json"]


def test_how_trials_end(tracking_uri):
    tracker, logger = study(tracking_uri, "ends")
    trials = {
        "finished": fake_trial("f", last_result={"cycle": 2}, variant="a"),
        "asha": fake_trial("s", last_result={"cycle": 1}, variant="b"),
        "diverged": fake_trial("d", error=ValueError("loss is nan"), variant="c"),
        "oom": fake_trial("o", error=OSError("disk"), variant="d"),
        "died": fake_trial("k", variant="e"),
        "interrupted": fake_trial("i", variant="f"),
    }
    for trial in trials.values():
        logger.log_trial_start(trial)
    for name in ("finished", "asha"):
        logger.log_trial_end(trials[name])
    for name in ("diverged", "oom", "died"):
        logger.log_trial_end(trials[name], failed=True)
    assert tracker.close_unfinished_trials() == 1
    runs = {run.data.tags["trial_id"]: run for run in tracker.trial_runs()}
    assert runs["f"].info.status == "FINISHED"
    assert runs["s"].info.status == "KILLED" and runs["s"].data.tags["stop_reason"] == "asha"
    assert runs["s"].data.tags["stopped_at_cycle"] == "1"
    assert runs["d"].info.status == "FAILED" and runs["d"].data.tags["error"] == "ValueError: loss is nan"
    assert runs["d"].data.tags["error_kind"] == "deterministic" and runs["d"].data.tags["retry"] == "no"
    assert runs["o"].data.tags["error_kind"] == "transient" and "retry" not in runs["o"].data.tags
    assert runs["k"].data.tags["error"] == "the trial process died: see /x/error.txt"
    assert runs["i"].info.status == "KILLED" and runs["i"].data.tags["stop_reason"] == "interrupted"

    outcome = StudyOutcome.of(load_space("smoke"), list(runs.values()))  # the smoke grid expects 2 trials
    assert (outcome.expected, outcome.finished, outcome.failed, outcome.unfinished) == (6, 2, 3, 1)
    assert outcome.status == "KILLED" and outcome.exit_code == 130


def test_a_resumed_driver_reopens_the_same_runs(tracking_uri, tmp_path):
    client = MlflowClient(tracking_uri)
    tracker, logger = study(tracking_uri, "resume")
    trial = fake_trial("r1", error=OSError("node lost"))
    logger.log_trial_start(trial)
    logger.log_trial_result(1, trial, {"cycle": 0, "target_mAP": 10.0})
    logger.on_checkpoint(1, [], trial, checkpoint(tmp_path / "c0", ["source,0,1,5.0,1.5"]))
    logger.log_trial_end(trial, failed=True)
    tracker.finish("FAILED")

    again = StudyTracker(tracking_uri, "resume")
    assert again.start({}, {}, resume=True) == tracker.run_id
    restored = pickle.loads(pickle.dumps(logger))  # Tune restores its callbacks from tuner.pkl
    restored.log_trial_start(trial)
    (run,) = again.trial_runs()
    assert run.info.status == "RUNNING" and run.data.tags["retried_after"] == "OSError: node lost"
    assert not {"error", "error_kind"} & set(run.data.tags)
    restored.log_trial_result(2, trial, {"cycle": 0, "target_mAP": 10.5})  # Ray's state lagged: cycle 0 redone
    restored.log_trial_result(2, trial, {"cycle": 1, "target_mAP": 12.0})
    # The restarted trial's checkpoint holds the old epoch and a new one: each is logged once.
    restored.on_checkpoint(2, [], trial, checkpoint(tmp_path / "c1", ["source,0,1,5.0,1.5", "adapt,1,1,3.0,0.5"]))
    assert metric_steps(client, run.info.run_id, "target_mAP") == [(0, 10.0), (1, 12.0)]
    assert metric_steps(client, run.info.run_id, "epoch_loss_total") == [(0, 5.0), (1, 3.0)]
    assert len(client.search_runs([run.info.experiment_id])) == 2  # one parent, one trial: nothing duplicated
    assert StudyTracker(tracking_uri, "resume").start({}, {}, resume=False) != tracker.run_id


def test_a_parent_left_by_a_dead_driver_is_closed_on_resume(tracking_uri, capsys):
    tracker, logger = study(tracking_uri, "dead")
    logger.log_trial_start(fake_trial("x"))  # the driver was SIGKILLed here: parent and trial RUNNING
    StudyTracker(tracking_uri, "dead").start({}, {}, resume=True)
    assert "is gone: marked KILLED with 1 open trial run(s)" in capsys.readouterr().out
    (run,) = tracker.trial_runs()
    assert run.info.status == "KILLED" and run.data.tags["stop_reason"] == "interrupted"


def test_bad_input_messages(tracking_uri):
    with pytest.raises(ValueError, match="no MLflow experiment named 'missing'"):
        find_experiment_id(MlflowClient(tracking_uri), "missing", tracking_uri, create=False)
    with pytest.raises(RuntimeError, match="call start"):
        StudyTracker(tracking_uri, "bad").finish()
    _, logger = study(tracking_uri, "bad")
    with pytest.raises(LookupError, match="trial nope has no MLflow run"):
        logger.log_trial_result(1, fake_trial("nope"), {"cycle": 0})


def test_epoch_rows_are_read_as_the_pipeline_wrote_them(tmp_path):
    """A checkpoint with no epochs yet (an empty history) gives no rows; empty and NaN cells are no value."""
    from reidmodel.checkpoint import write_csv
    from study.tracking import _read_rows

    write_csv(tmp_path / "empty.csv", [])
    assert _read_rows(tmp_path / "empty.csv") == [] and _read_rows(tmp_path / "absent.csv") == []
    write_csv(tmp_path / "history.csv", [{"stage": "source", "cycle": 0, "epoch": 1, "loss_total": 5.0},
                                         {"stage": "adapt", "cycle": 1, "epoch": 1, "loss_total": math.nan,
                                          "loss_triplet": 1.5}])
    assert _read_rows(tmp_path / "history.csv") == [{"loss_total": 5.0}, {"loss_triplet": 1.5}]

"""Item 1: an interrupted or failed study never passes for a finished one and never writes over another study's
results; each study owns its results folder; reports are swapped in whole."""

import signal

import pytest

from study.publish import publish_report, swap_in
from study.run import main
from study.spaces import load_space
from study.tracking import StudyTracker, TrialLogger
from study.trial import TrialConfigs
from tests.tiny_studies import fake_trial

from .helpers import (
    checkpoint_saved,
    cli,
    finished_study_folder,
    interrupt_when,
    runs,
    snapshot,
    start,
    stop,
    tiny_space,
)


@pytest.mark.parametrize("folder", ["smoke", "smoke.partial"])
def test_a_name_with_results_is_refused_without_resume(tmp_path, capsys, folder):
    taken = finished_study_folder(tmp_path, folder)  # committed results carry no Ray experiment folder
    before = snapshot(taken)
    assert main(["--space", "smoke", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{taken} already holds the results of a study named 'smoke'" in err
    assert "--name NEW" in err and snapshot(taken) == before
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray").exists()


def test_train_refuses_to_overwrite_an_earlier_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "cycles.csv").write_text("cycle,target_mAP\n0,12.5\n")
    proc = cli("reidmodel.train", "--quiet", "--out", out, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr == f"error: --out {out} already holds a run: pass --resume to continue it or another --out\n"
    assert (out / "cycles.csv").read_text() == "cycle,target_mAP\n0,12.5\n"
    proc = cli("reidmodel.train", "--quiet", "--out", out / "cycles.csv", timeout=60)
    assert proc.returncode == 2 and "is a file, not a folder" in proc.stderr


def test_swap_in_leaves_no_stale_file(tmp_path):
    target, staging = tmp_path / "study", tmp_path / ".study.staging"
    target.mkdir()
    (target / "importance.png").write_bytes(b"from the earlier report")
    staging.mkdir()
    (staging / "README.md").write_text("new")
    swap_in(staging, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study"]
    assert [p.name for p in target.iterdir()] == ["README.md"]


def _tracked_study(results, name="smoke"):
    """A study in MLflow with one trial run and one logged cycle, without running it."""
    uri = f"sqlite:///{results / 'mlflow.db'}"
    tracker = StudyTracker(uri, name)
    parent = tracker.start(load_space("smoke").model_dump(mode="json"), {}, resume=False)
    logger = TrialLogger(uri, parent, name, "none", TrialConfigs())
    trial = fake_trial("trial_0", variant="ULA")
    logger.log_trial_start(trial)
    logger.log_trial_result(1, trial, {"cycle": 0, "target_mAP": 20.0, "target_R1": 10.0})
    return uri, tracker


def test_report_goes_to_partial_unless_finished_and_a_dead_driver_is_marked(tmp_path):
    uri, tracker = _tracked_study(tmp_path)
    finished = finished_study_folder(tmp_path, "smoke")
    before = snapshot(finished)
    # A driver killed with SIGKILL leaves its parent RUNNING and its lock free: the report sees that it is gone.
    readme = publish_report("smoke", tmp_path, uri)
    assert readme == tmp_path / "smoke.partial" / "README.md"
    assert readme.read_text().startswith("> **Partial report**: the study's MLflow parent run is KILLED (driver ")
    assert snapshot(finished) == before  # a partial report never writes over a finished study's results
    client, parent, children = runs(tmp_path, "smoke")
    assert parent.info.status == "KILLED" and children[0].info.status == "KILLED"

    tracker.finish("FINISHED")
    readme = publish_report("smoke", tmp_path, uri)
    assert readme == tmp_path / "smoke" / "README.md" and "Partial" not in readme.read_text()
    assert not (tmp_path / "smoke.partial").exists() and "table1.csv" not in {p.name for p in readme.parent.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging or old folder left


@pytest.mark.slow
def test_sigint_and_sigkill_of_the_driver(tmp_path):
    """SIGINT: exit 130, parent KILLED, a partial report. SIGKILL: the parent stays RUNNING until the report or
    the next --resume notices its driver is gone. --resume then finishes the study, nothing rerun."""
    results = tmp_path / "results"
    finished = finished_study_folder(results)
    before = snapshot(finished)
    space = tiny_space(tmp_path, "halted", [{"name": "ULA", "set": {"kd.enabled": False}}],
                       **{"adapt.cycles": 4})
    command = ["--space", space, "--results-dir", results, "--max-concurrent", "1"]
    experiment = results / "ray" / "halted"

    proc = start("study.run", *command)
    try:
        output = interrupt_when(proc, checkpoint_saved(experiment, 1), signal.SIGINT, "cycle 1")
    finally:
        stop(proc)
    assert proc.returncode == 130, output[-3000:]
    assert "error: study 'halted' interrupted: 1 of 1 trials unfinished" in output
    _, parent, children = runs(results, "halted")
    assert parent.info.status == "KILLED" and [c.info.status for c in children] == ["KILLED"]
    assert (results / "halted.partial" / "README.md").read_text().startswith("> **Partial report**")
    assert not (results / "halted").exists()

    def trial_restarted() -> bool:
        return runs(results, "halted")[2][0].info.status == "RUNNING"

    proc = start("study.run", *command, "--resume")
    try:
        interrupt_when(proc, trial_restarted, signal.SIGKILL, "the trial to restart")
    finally:
        stop(proc)
    _, parent, _ = runs(results, "halted")
    assert parent.info.status == "RUNNING"  # nobody could close it
    report = cli("study.report", "--study", "halted", "--results-dir", results, timeout=120)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "is gone: marked KILLED" in report.stdout
    _, parent, _ = runs(results, "halted")
    assert parent.info.status == "KILLED" and "died" in parent.data.tags["stop_reason"]

    resumed = cli("study.run", *command, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    client, parent, children = runs(results, "halted")
    assert parent.info.status == "FINISHED" and children[0].info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(children[0].info.run_id, "target_mAP"))
    assert steps == [0, 1, 2, 3, 4]  # each cycle logged once: nothing lost, nothing rerun
    assert (results / "halted" / "README.md").is_file() and not (results / "halted.partial").exists()
    assert snapshot(finished) == before

"""An interrupted study continues with --resume: finished trials are not rerun, an unfinished trial goes on
from its last cycle checkpoint, and each MLflow run is continued rather than duplicated."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_interrupted_study_resumes(tmp_path):
    space = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    space["name"] = "interrupted"
    space["fixed"]["adapt.cycles"] = 4
    space_file = tmp_path / "interrupted.yaml"
    space_file.write_text(yaml.safe_dump(space))
    results = tmp_path / "results"
    command = [sys.executable, "-m", "study.run", "--space", str(space_file), "--results-dir", str(results),
               "--max-concurrent", "1"]

    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    experiment = results / "ray" / "interrupted"
    deadline = time.monotonic() + 300
    while not list(experiment.glob("*/checkpoint_000001")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list(experiment.glob("*/checkpoint_000001")), "no trial reached cycle 1"
    proc.send_signal(signal.SIGINT)  # Ray Tune saves the experiment state and stops
    proc.communicate(timeout=120)

    resumed = subprocess.run([*command, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("interrupted").experiment_id
    runs = client.search_runs([experiment_id])
    parents = [r for r in runs if r.data.tags.get("study.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("study.role") == "trial"]
    assert len(parents) == 1 and len(children) == 2
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "target_mAP")]
        # Each cycle logged once: nothing rerun from scratch, nothing lost.
        assert sorted(steps) == [0, 1, 2, 3, 4], steps
        assert child.info.status == "FINISHED"

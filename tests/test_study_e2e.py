"""End to end: the real CLI on the smoke space (Ray Tune + MLflow + pre-training cache), then a resume; on a
machine like the one that ran the committed results/smoke/, the same numbers."""

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from study.spaces import load_space

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "results" / "smoke"
pytestmark = pytest.mark.slow


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "study.run", "--space", "smoke", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    proc = run_cli("--name", "smoke_e2e", "--results-dir", str(results), "--max-concurrent", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results, proc


def test_mlflow_holds_parent_and_child_runs_with_params_and_cycle_metrics(smoke_study):
    from mlflow.tracking import MlflowClient

    results, _ = smoke_study
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke_e2e")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 2
    report = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
    assert {"report/README.md", "report/trials.csv", "report/target_map.png"} <= report
    assert {c.data.tags["variant"] for c in children} == {"ULA", "ULA+KD(0.5)"}
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.params["data.source"] == "synthetic_duke"
        assert child.data.params["kd.enabled"] == ("true" if child.data.tags["variant"] == "ULA+KD(0.5)" else "false")
        history = client.get_metric_history(child.info.run_id, "target_mAP")
        assert sorted(m.step for m in history) == [0, 1]  # cycle 0 (source only) and the one adaptation cycle
        assert all(0.0 <= m.value <= 100.0 for m in history)
        # Where it computed: this machine's kernels, the space's one thread per trial, the CPU (no GPU reserved).
        machine = child.data.tags["machine"]
        assert f"({torch.backends.cpu.get_cpu_capability()} kernels), 1 thread(s), torch {torch.__version__}" in machine


def test_report_and_summary_written(smoke_study):
    results, proc = smoke_study
    assert (results / "smoke_e2e" / "README.md").is_file()
    assert (results / "smoke_e2e" / "trials.csv").is_file()
    assert "ULA+KD(0.5)" in proc.stdout and "report:" in proc.stdout


def test_trials_sharing_stage1_train_it_once(smoke_study):
    results, _ = smoke_study
    checkpoints = [p for p in (results / "cache" / "pretrain").rglob("*") if p.is_file() and p.suffix in (".pt", ".pth")]
    assert len(checkpoints) == 1


def test_resume_reruns_nothing_finished(smoke_study):
    from mlflow.tracking import MlflowClient

    results, _ = smoke_study
    proc = run_cli("--name", "smoke_e2e", "--results-dir", str(results), "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke_e2e")
    children = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2
    for child in children:
        assert len(client.get_metric_history(child.info.run_id, "target_mAP")) == 2  # no cycle logged twice


def test_rerun_without_resume_is_refused(smoke_study):
    results, _ = smoke_study
    proc = run_cli("--name", "smoke_e2e", "--results-dir", str(results))
    assert proc.returncode == 2 and "already exists" in proc.stderr


def committed_machine() -> tuple[str, int]:
    """The CPU capability and threads per trial that results/smoke/README.md records for its run."""
    found = re.search(r"^- CPU capability: (\w+), threads per trial: (\d+)", (COMMITTED / "README.md").read_text(),
                      re.MULTILINE)
    assert found, ("results/smoke/README.md has no '- CPU capability: NAME, threads per trial: N' line: add the one "
                   "of the machine that ran it (torch.backends.cpu.get_cpu_capability())")
    return found[1], int(found[2])


def test_same_seed_gives_the_committed_smoke_numbers(smoke_study):
    """``python -m study.run --space smoke`` made results/smoke/; the fixture runs the same space and seed."""
    capability, threads = committed_machine()
    here = (torch.backends.cpu.get_cpu_capability(), load_space("smoke").resources.cpus_per_trial)
    if here != (capability, threads):
        pytest.skip(f"results/smoke/ ran on {capability} kernels with {threads} thread(s) per trial, this machine "
                    f"has {here[0]} with {here[1]}: other kernels or threads give other numbers for the same seed "
                    "(results/determinism.md)")
    results, _ = smoke_study
    committed = pd.read_csv(COMMITTED / "trials.csv").set_index("variant").sort_index()
    produced = pd.read_csv(results / "smoke_e2e" / "trials.csv").set_index("variant").sort_index()
    numbers = [c for c in committed.columns if c in ("cycles", "final_cycle", "best_cycle")
               or c.startswith(("final_target_", "best_target_"))]
    assert len(numbers) == 13 and list(produced.index) == list(committed.index) == ["ULA", "ULA+KD(0.5)"]
    pd.testing.assert_frame_equal(produced[numbers], committed[numbers], check_exact=True)

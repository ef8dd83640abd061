"""The study CLI rejects bad input with ``error: <one line>`` and exit code 2, before Ray starts."""

import subprocess
import sys
from pathlib import Path

import pytest

from study.paths import StudyPaths
from study.run import main

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--space", "nope"], "unknown space 'nope'"),
        (["--space", "smoke", "--set", "ula.epz=1"], "--set: unknown config key 'ula.epz': did you mean ula.eps?"),
        (["--space", "smoke", "--set", "kd.mu=2"], "kd.mu=2 is out of range (>= 0, <= 1)"),
        (["--space", "smoke", "--set", "kd.mu"], "--set 'kd.mu' is not key=value"),
        (["--space", "smoke", "--directions", "synthetic_duke->marketx"], "unknown dataset 'marketx'"),
        (["--space", "smoke", "--data-root", "/nonexistent/reid"], "--data-root /nonexistent/reid is not a folder"),
        (["--space", "smoke", "--cpus-per-trial", "0"], "--cpus-per-trial 0 is out of range"),
        (["--space", "smoke", "--name", "a/b"], "--name 'a/b' is not a folder name"),
        (["--space", "smoke", "--resume"], "--resume: no study 'smoke'"),
        (["--space", "smoke", "--seeds", "0"], "--seeds 0 is out of range"),
        (["--space", "hpo", "--seeds", "2"], "a search samples on one seed"),
        (["--space", "ablation-paper"], "dukemtmc is real data: pass --data-root DIR"),
        (["--space", "hpo-modern", "--preset", "cpu"], "dukemtmc is real data: pass --data-root DIR"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
    assert main([*argv, "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray").exists()


def test_existing_study_is_not_overwritten_without_resume(tmp_path, capsys):
    finished = tmp_path / "ray" / "smoke"
    finished.mkdir(parents=True)
    (finished / "tuner.pkl").write_bytes(b"kept")
    assert main(["--space", "smoke", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "study 'smoke' already exists" in err and "pass --resume to continue it" in err
    assert (finished / "tuner.pkl").read_bytes() == b"kept"


def test_data_root_datasets_are_resolved_before_start(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    argv = ["--space", "smoke", "--data-root", str(tmp_path / "data"), "--directions", "dukemtmc->market1501",
            "--results-dir", str(tmp_path)]
    assert main(argv) == 2
    assert "--data-root: dataset 'dukemtmc' not found under" in capsys.readouterr().err


def test_module_entry_point_exits_2_without_starting_ray(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "study.run", "--space", "smoke", "--set", "adapt.cycels=2",
         "--results-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr == "error: --set: unknown config key 'adapt.cycels': did you mean adapt.cycles?\n"
    assert proc.stdout == ""


def test_a_table_naming_a_missing_variant_fails_before_ray_starts(tmp_path, capsys):
    smoke = (REPO / "search_spaces" / "smoke.yaml").read_text()
    space = tmp_path / "bad_table.yaml"
    space.write_text(smoke.replace("{variant: ULA+KD(0.5), label", "{variant: ULA+KD(0.9), label"))
    assert main(["--space", str(space), "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "variant 'ULA+KD(0.9)' is not in this space's variants" in err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray").exists()


def test_study_paths_default_under_the_results_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = StudyPaths.resolve("s", "results", search=True)
    results = tmp_path.resolve() / "results"
    assert (paths.results_dir, paths.storage, paths.experiment_path) == (results, str(results / "ray"),
                                                                         str(results / "ray" / "s"))
    assert paths.tracking_uri == f"sqlite:///{results}/mlflow.db" and paths.local_storage
    assert paths.optuna_storage == f"sqlite:///{results}/optuna.db" and paths.cache_dir == results / "cache" / "pretrain"
    remote = StudyPaths.resolve("s", "results", storage="s3://bucket/ray/", tracking_uri="http://mlflow:5000")
    assert (remote.storage, remote.experiment_path, remote.local_storage) == ("s3://bucket/ray/", "s3://bucket/ray/s",
                                                                              False)
    assert remote.tracking_uri == "http://mlflow:5000" and remote.optuna_storage is None

"""The single-experiment CLI, run for real on the tiny synthetic benchmark."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY

REPO = Path(__file__).resolve().parent.parent


def run_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reidmodel.train", "--quiet", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def tiny_args(synthetic_cache) -> list[str]:
    sets = {**TINY, "adapt.cycles": 1, "data.synthetic_cache": str(synthetic_cache)}
    return [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]


@pytest.mark.slow
def test_train_writes_per_cycle_csv_and_resumes(synthetic_cache, tmp_path):
    out = tmp_path / "run"
    proc = run_train(*tiny_args(synthetic_cache), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(out / "cycles.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["cycle"] for row in rows] == ["0", "1"]
    assert float(rows[1]["target_mAP"]) >= 0 and "ula_precision" in rows[1]
    assert (out / "history.csv").is_file() and (out / "config.yaml").is_file()
    assert "target_mAP" in proc.stdout.splitlines()[0]

    # Asking for one more cycle and --resume continues after cycle 1 instead of starting over.
    more = [*tiny_args(synthetic_cache), "--set", "adapt.cycles=2", "--out", str(out), "--resume"]
    proc = run_train(*more)
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = [line.split()[0] for line in proc.stdout.splitlines()[1:] if line.strip()[:1].isdigit()]
    assert printed == ["2"]
    with open(out / "cycles.csv", newline="") as handle:
        assert [row["cycle"] for row in csv.DictReader(handle)] == ["0", "1", "2"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "ula.epz=1"], "did you mean ula.eps?"),
        (["--config", "/no/such.yaml"], "config file /no/such.yaml does not exist"),
        (["--set", "data.root=/no/such/root"], "/no/such/root"),
        (["--resume", "--out", "/tmp/definitely-not-a-run"], "holds no finished cycle"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path / "run")]
    proc = run_train(*args)
    assert proc.returncode == 2
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and message in error

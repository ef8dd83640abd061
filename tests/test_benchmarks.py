"""The benchmark suite at its --quick sizes: it runs, writes its report, and its correctness comparisons
(current vs previous code, reference loops, sparse vs dense clustering) hold. Times are not checked."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_quick_suite_comparisons_hold(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = tmp_path / "benchmarks.md"
    standalone = "## Label-free validators: cost per cycle (issue 17)\n\nwritten by benchmarks.validators\n"
    out.write_text(f"# An earlier report\n\n{standalone}\n## Correctness comparisons\n\nold\n")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = out.read_text()
    assert "FAIL" not in report and "[FAIL]" not in proc.stdout
    comparisons = report.split("## Correctness comparisons")[1].split("## Hot paths")[0]
    rows = [line for line in comparisons.splitlines() if line.startswith("| ") and "| pass |" in line]
    # Evaluation (two sets x four references), five clustering settings, two re-ranking entries, training.
    assert len(rows) >= 16, comparisons
    for expected in ("current == previous", "current == loop", "current == classic", "features path == matrix path",
                     "sparse == dense DBSCAN", "re-ranking from matrices == previous"):
        assert expected in comparisons, expected
    assert (tmp_path / "benchmark_growth.png").stat().st_size > 0
    for section in ("## Against the targets", "## Evaluation", "## ULA clustering", "## k-reciprocal re-ranking",
                    "## Growth with N", "## Training throughput", "## Studies"):
        assert section in report, section
    assert standalone in report and "An earlier report" not in report  # a section it does not write is kept

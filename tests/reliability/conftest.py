"""One small study with two faults, shared by the divergence (item 2), retry (item 5) and local-Ray (item 3)
tests: a trial whose source training diverges, and a trial that hits a transient error once at cycle 1."""

import shutil
import tempfile
from pathlib import Path

import pytest

from .helpers import FAULT_ENV, cli, finished_study_folder, snapshot, tiny_space

FAULTY = "faulty"
VARIANTS = [
    {"name": "ULA", "set": {"kd.enabled": False}},
    # Adam steps of 1e30 blow the weights up within the first epoch: the loss turns NaN.
    {"name": "diverges", "set": {"kd.enabled": False, "source.lr": 1e30}},
]


@pytest.fixture(scope="session")
def faulty_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faulty")
    results = folder / "results"
    finished = finished_study_folder(results)
    before = snapshot(finished)
    fault_log = folder / "faults.log"
    # A stale record of a dead cluster, as `ray start --head` leaves it when its processes die without
    # `ray stop`: a study without --address must start its own Ray, not retry this address forever.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths live under it
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")
    proc = cli("study.run", "--space", tiny_space(folder, FAULTY, VARIANTS), "--results-dir", results,
               "--max-concurrent", "2",
               env={FAULT_ENV: f"transient:1:{fault_log}", "RAY_TMPDIR": str(ray_tmp)})
    yield {"results": results, "proc": proc, "fault_log": fault_log, "finished": finished,
           "finished_before": before}
    shutil.rmtree(ray_tmp, ignore_errors=True)

"""The smoke study on a real two-node Ray cluster (both nodes on this machine), reached with --address."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture
def two_node_cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def test_smoke_study_on_two_nodes(two_node_cluster, tmp_path):
    import ray

    ray.init(address=two_node_cluster.address)
    try:
        assert len([node for node in ray.nodes() if node["Alive"]]) == 2
    finally:
        ray.shutdown()
    proc = subprocess.run(
        [sys.executable, "-m", "study.run", "--space", "smoke", "--name", "cluster_smoke",
         "--address", two_node_cluster.address, "--results-dir", str(tmp_path),
         "--storage", str(tmp_path / "shared_storage")],
        cwd=REPO, capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Number of trials: 2/2 (2 TERMINATED)" in proc.stdout
    assert (tmp_path / "shared_storage" / "cluster_smoke").is_dir()
    assert (tmp_path / "cluster_smoke" / "README.md").is_file()

"""study.confirm end to end on tiny data: a finished search's best trial retrained on fresh seeds."""

import pytest

from tests.tiny_studies import run_module as run
from tests.tiny_studies import run_study, tiny_search

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("confirm")
    space = tiny_search(tmp, "tiny_search", {"kd.mu": {"type": "choice", "values": [0.2, 0.9]}},
                        {"sampler": "random", "num_samples": 2, "metric": "target_mAP", "mode": "max", "seed": 1})
    results = tmp / "results"
    run_study(space, results)
    (tmp / "search_report_before.md").write_text((results / "tiny_search" / "README.md").read_text())
    proc = run("study.confirm", "--study", "tiny_search", "--seeds", "2", "--results-dir", str(results))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return results


def test_best_trial_is_retrained_on_fresh_seeds_under_a_new_parent(confirmed):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{confirmed / 'mlflow.db'}")
    search = client.get_experiment_by_name("tiny_search")
    searched = [r for r in client.search_runs([search.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    best = max(searched, key=lambda r: r.data.metrics["target_mAP"])

    experiment = client.get_experiment_by_name("tiny_search-confirm")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("study.role") == "parent"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 6
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.data.tags["seed"] for r in children} == {"100", "101"}  # the search ran on seed 0
    by_variant = {}
    for child in children:
        by_variant.setdefault(child.data.tags["variant"], []).append(child)
        assert child.info.status == "FINISHED"
    assert set(by_variant) == {"paper default", "searched best", "supervised on target"}
    for child in by_variant["searched best"]:
        assert child.data.params["kd.mu"] == best.data.params["kd.mu"]
        assert child.data.params["data.source"] == "synthetic_duke"
    for child in by_variant["paper default"]:
        assert child.data.params["kd.mu"] == "0.5" and child.data.params["ula.k1"] == "10"
    for child in by_variant["supervised on target"]:
        assert child.data.params["data.source"] == child.data.params["data.target"] == "synthetic_market"


def test_confirmation_report_has_the_table_and_the_goal(confirmed):
    text = (confirmed / "tiny_search-confirm" / "README.md").read_text()
    assert "Confirmation of tiny_search on fresh seeds" in text
    assert "The searched setting beats the paper default (by more than 10 mAP)" in text
    written = (confirmed / "spaces" / "tiny_search-confirm.yaml").read_text()
    assert "model.attention:\n    - conv3" in written and "&id" not in written and "*id" not in written


def test_a_grid_study_cannot_be_confirmed(confirmed):
    proc = run("study.confirm", "--study", "tiny_search-confirm", "--results-dir", str(confirmed))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: study 'tiny_search-confirm' is a grid study: confirm a search study"]


def test_the_search_report_shows_its_confirmation(confirmed):
    before = (confirmed.parent / "search_report_before.md").read_text()
    assert "Not confirmed yet" in before and "python -m study.confirm --study tiny_search --seeds 3" in before
    proc = run("study.report", "--study", "tiny_search", "--results-dir", str(confirmed))
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (confirmed / "tiny_search" / "README.md").read_text()
    section = text.split("## Confirmation on fresh seeds")[1].split("\n## ")[0]
    assert "### `tiny_search-confirm`" in section and "[its report](../tiny_search-confirm/README.md)" in section
    confirmation = (confirmed / "tiny_search-confirm" / "README.md").read_text()
    table = confirmation.split("## Confirmation of tiny_search on fresh seeds")[1].split("<details>")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 4 and all(row in section for row in rows)  # the same final-cycle table
    assert "The searched setting beats the paper default (by more than 10 mAP)" in section
    assert "Not confirmed yet" not in section


def test_a_paper_preset_searchs_default_is_the_paper_preset_whatever_the_search_fixed():
    from study.confirm import confirmation_variants

    variants = confirmation_variants({"ula.eps": 0.55}, "dukemtmc->market1501", "paper")
    default = {v["name"]: v["set"] for v in variants}["paper default"]
    # hpo-modern fixes ula.distance=jaccard and k1 30: the reference row must undo that.
    assert (default["ula.distance"], default["ula.eps"], default["ula.k1"], default["adapt.lr"]) == (
        "euclidean", 1.0, 20, 1e-7)
    assert not any(key.startswith(("data.", "runtime.")) for key in default)  # the study's data and devices stay

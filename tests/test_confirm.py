"""study.confirm end to end on tiny data (slow): a finished search's best trial retrained on fresh seeds; and
the confirmation grid built from hand-made searches (fast)."""

from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from study.confirm import (
    AT_BUDGET,
    Pick,
    confirmation_space,
    confirmation_table,
    confirmation_variants,
    fresh_draw,
    paper_default_set,
    searched_budget,
)
from study.spaces import SpaceError, SpaceFile, load_space
from tests.tiny_studies import run_module as run
from tests.tiny_studies import run_study, tiny_search


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_confirmation_report_has_the_table_and_the_goal(confirmed):
    text = (confirmed / "tiny_search-confirm" / "README.md").read_text()
    assert "Confirmation of tiny_search on fresh seeds" in text
    assert "The searched setting beats the paper default (by more than 10 mAP)" in text
    written = (confirmed / "spaces" / "tiny_search-confirm.yaml").read_text()
    assert "model.attention:\n    - conv3" in written and "&id" not in written and "*id" not in written


@pytest.mark.slow
def test_a_grid_study_cannot_be_confirmed(confirmed):
    proc = run("study.confirm", "--study", "tiny_search-confirm", "--results-dir", str(confirmed))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: study 'tiny_search-confirm' is a grid study: confirm a search study"]


@pytest.mark.slow
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
    variants = confirmation_variants([pick({"ula.eps": 0.55})], "dukemtmc->market1501", "paper")
    default = {v["name"]: v["set"] for v in variants}["paper default"]
    # hpo-modern fixes ula.distance=jaccard and k1 30: the reference row must undo that.
    assert (default["ula.distance"], default["ula.eps"], default["ula.k1"], default["adapt.lr"]) == (
        "euclidean", 1.0, 20, 1e-7)
    assert not any(key.startswith(("data.", "runtime.")) for key in default)  # the study's data and devices stay


def pick(settings: dict, budget: dict | None = None, selection: str = "oracle", study: str = "hpo-d2m") -> Pick:
    return Pick(study, selection, settings, budget or {}, "trial 7", "final target_mAP 31.00 on seed(s) [0]")


def hpo_space(**changes) -> dict:
    """The committed hpo search as its parent run logs it (paper default: 5 cycles of 2 epochs at lr 3.5e-5)."""
    return {**load_space("hpo").model_dump(mode="json"), **changes}


def searched_flat(**budget) -> dict:
    from reidmodel.config import apply_overrides, preset

    space = hpo_space()
    config = apply_overrides(preset("cpu"), {**space["fixed"], "ula.eps": 0.55, **budget})
    return config.flat()


def test_the_budget_row_takes_the_searched_budget_where_it_differs_from_the_paper_defaults():
    flat = searched_flat(**{"adapt.cycles": 8, "adapt.cycle_epochs": 2, "adapt.lr": 8e-4})
    assert searched_budget(flat, hpo_space()) == {"adapt.cycles": 8, "adapt.lr": 8e-4}  # 2 epochs is the default's
    narrow = hpo_space(params={k: v for k, v in hpo_space()["params"].items() if k != "adapt.lr"})
    assert searched_budget(flat, narrow) == {"adapt.cycles": 8}  # a budget the search did not vary is not carried
    assert searched_budget(searched_flat(), hpo_space()) == {}  # the default's own budget: no row


def test_the_paper_default_at_the_searched_budget_is_a_row_with_its_claim():
    budget = {"adapt.cycles": 8, "adapt.lr": 8e-4}
    variants = confirmation_variants([pick({"ula.eps": 0.55, **budget}, budget)], "synthetic_duke->synthetic_market")
    assert [v["name"] for v in variants] == ["paper default", AT_BUDGET, "searched best", "supervised on target"]
    assert variants[1]["set"] == {**paper_default_set("cpu"), **budget}
    table = confirmation_table([pick({"ula.eps": 0.55, **budget}, budget)])
    assert [row["variant"] for row in table["rows"]] == [v["name"] for v in variants]
    assert {"text": "The searched setting beats the paper default at the same budget", "variant": "searched best",
            "over": AT_BUDGET} in table["claims"]
    SpaceFile.model_validate({"kind": "grid", "variants": variants, "tables": [table]})  # a grid that runs
    assert len(confirmation_variants([pick({"ula.eps": 0.55})], "synthetic_duke->synthetic_market")) == 3
    assert AT_BUDGET not in str(confirmation_table([pick({"ula.eps": 0.55})]))


@pytest.mark.parametrize("space, seed, message", [
    (hpo_space(), 0, "--synthetic-seed 0: the search 'hpo-d2m' itself ran on data.synthetic_seed=0: pass a seed"),
    (hpo_space(fixed={**hpo_space()["fixed"], "data.synthetic_seed": 7}), 7, "itself ran on data.synthetic_seed=7"),
    (hpo_space(directions=["dukemtmc->market1501"], fixed={"data.root": "/data/reid"}), 7,
     "--synthetic-seed: study 'hpo-d2m' runs on real data (dukemtmc->market1501): a fresh draw exists only"),
    (hpo_space(), -1, "--synthetic-seed: data.synthetic_seed=-1 is out of range"),
])
def test_a_fresh_draw_is_refused_in_one_line_where_the_search_saw_it_or_there_is_none(space, seed, message):
    with pytest.raises(SpaceError) as refused:
        fresh_draw("hpo-d2m", space, seed)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_confirmation_on_a_fresh_draw_keeps_the_searchs_selection_and_sets_the_draw(monkeypatch):
    import study.confirm
    import study.report.load

    budget = {"adapt.cycles": 8, "adapt.cycle_epochs": 4, "adapt.lr": 8e-4}
    trials = pd.DataFrame({"trial": ["a", "b"], "run_id": ["ra", "rb"], "outcome": ["finished"] * 2, "seed": [0, 0]})
    searched = SimpleNamespace(
        space=hpo_space(), trials=trials,
        cycles=pd.DataFrame({"trial": ["a", "b"], "cycle": [3, 8], "target_mAP": [20.0, 31.0]}),
        children=pd.DataFrame({"run_id": ["ra", "rb"], "tags.mlflow.runName": ["trial a", "trial b"]}))
    monkeypatch.setattr(study.report.load.LoadedStudy, "load", lambda name, uri: searched)
    monkeypatch.setattr(study.confirm, "trial_config_flat", lambda run: searched_flat(**budget))
    space = confirmation_space("hpo-d2m", "sqlite:///x.db", 2, "hpo-d2m-confirm-synthetic7", synthetic_seed=7)
    assert space.selection == "oracle" and space.fixed["data.synthetic_seed"] == 7 and space.seeds == [100, 101]
    variants = {v.name: v.set for v in space.variants}
    assert variants[AT_BUDGET] == {**paper_default_set("cpu"), **budget}
    assert "data.synthetic_seed" not in variants["searched best"] and variants["searched best"]["ula.eps"] == 0.55
    assert "fresh draw of the synthetic benchmark (data.synthetic_seed=7)" in space.tables[0].title
    assert "trial b" in space.description  # the best by final target mAP


def fake_search(monkeypatch, studies: dict, *budgets: dict) -> None:
    """LoadedStudy.load answers these hand-made searches: the best trials ran at eps 0.55 and these budgets, the
    first read the first (the last one read serves the rest)."""
    import study.confirm
    import study.report.load

    trials = pd.DataFrame({"trial": ["a", "b"], "run_id": ["ra", "rb"], "outcome": ["finished"] * 2, "seed": [0, 0]})
    cycles = pd.DataFrame({"trial": ["a", "b"], "cycle": [3, 8], "target_mAP": [20.0, 31.0], "info_max": [5.0, 4.0]})
    children = pd.DataFrame({"run_id": ["ra", "rb"], "tags.mlflow.runName": ["trial a", "trial b"]})
    monkeypatch.setattr(study.report.load.LoadedStudy, "load", lambda name, uri: SimpleNamespace(
        space=studies[name], trials=trials, cycles=cycles, children=children))
    queue = list(budgets)
    monkeypatch.setattr(study.confirm, "trial_config_flat",
                        lambda run: searched_flat(**(queue.pop(0) if len(queue) > 1 else queue[0])))


def labelfree_space(**changes) -> dict:
    return {**hpo_space(), "selection": "label_free", "search": {"metric": "info_max", "mode": "max"}, **changes}


def test_a_label_free_search_is_confirmed_beside_its_oracle_search_with_each_budget_row(monkeypatch):
    budget = {"adapt.cycles": 8, "adapt.cycle_epochs": 4, "adapt.lr": 8e-4}
    fake_search(monkeypatch, {"lf": labelfree_space(), "hpo-d2m": hpo_space()}, budget, {"adapt.cycles": 3})
    space = confirmation_space("lf", "sqlite:///x.db", 3, "lf-vs-oracle", beside="hpo-d2m")
    assert [v.name for v in space.variants] == [
        "paper default", "paper default at the label-free budget", "label-free best",
        "paper default at the oracle budget", "oracle best", "supervised on target"]
    assert space.selection == "oracle" and space.seeds == [100, 101, 102]  # marked as its most label-reading pick
    assert "trial a, final info_max 5.00" in space.description  # the label-free pick is its validator's best
    assert "trial b, final target_mAP 31.00" in space.description
    claims = {(c.variant, c.over) for c in space.tables[0].claims}
    assert ("oracle best", "label-free best") in claims and ("label-free best", "paper default") in claims
    assert ("oracle best", "paper default at the oracle budget") in claims


def test_a_method_setting_only_one_search_fixed_travels_with_its_pick_beside(monkeypatch):
    clusters = {**hpo_space()["fixed"], "ula.class_ratio_of": "clusters"}
    fake_search(monkeypatch, {"lf": labelfree_space(fixed=clusters), "hpo-d2m": hpo_space()},
                {"ula.class_ratio_of": "clusters"}, {"adapt.cycles": 3})
    space = confirmation_space("lf", "sqlite:///x.db", 3, "lf-vs-oracle", beside="hpo-d2m")
    variants = {v.name: v.set for v in space.variants}
    assert "ula.class_ratio_of" not in space.fixed and space.fixed == hpo_space()["fixed"]
    assert variants["label-free best"]["ula.class_ratio_of"] == "clusters"
    assert "ula.class_ratio_of" not in variants["oracle best"] and "ula.class_ratio_of" not in variants["paper default"]


def test_two_picks_with_one_budget_share_its_row():
    budget = {"adapt.cycles": 8}
    picks = [pick({"ula.eps": 0.55, **budget}, budget, "label_free"), pick({"ula.eps": 0.3, **budget}, budget)]
    variants = confirmation_variants(picks, "synthetic_duke->synthetic_market")
    assert [v["name"] for v in variants].count("paper default at the oracle budget") == 0
    claims = {(c["variant"], c["over"]) for c in confirmation_table(picks)["claims"]}
    assert ("oracle best", "paper default at the label-free budget") in claims


def test_a_committed_confirmation_space_serves_as_the_oracle_pick_where_its_runs_are_gone(monkeypatch, tmp_path):
    budget = {"adapt.cycles": 8, "adapt.lr": 8e-4}
    fake_search(monkeypatch, {"lf": labelfree_space()}, {"adapt.cycles": 3})
    committed = tmp_path / "hpo-d2m-confirm.yaml"
    oracle = confirmation_space("lf", "sqlite:///x.db", 3, "hpo-d2m-confirm").model_dump(mode="json")
    fake_search(monkeypatch, {"lf": labelfree_space()}, budget)
    committed.write_text(yaml.safe_dump({**oracle, "selection": "oracle"}))
    space = confirmation_space("lf", "sqlite:///x.db", 3, "lf-vs-oracle", beside=str(committed))
    variants = {v.name: v.set for v in space.variants}
    assert variants["oracle best"]["adapt.cycles"] == 3 and "hpo-d2m's pick (trial a" in str(space.tables)
    assert variants["label-free best"]["adapt.cycles"] == 8
    assert variants["paper default at the oracle budget"] == {**paper_default_set("cpu"), "adapt.cycles": 3}
    assert variants["paper default at the label-free budget"] == {**paper_default_set("cpu"), **budget}
    committed.write_text(yaml.safe_dump({**oracle, "selection": "oracle", "seeds": [100, 101]}))
    with pytest.raises(SpaceError, match="it confirmed on seeds \\[100, 101\\], not all of .*: pass --seeds 2 or fewer"):
        confirmation_space("lf", "sqlite:///x.db", 3, "lf-vs-oracle", beside=str(committed))
    committed.write_text(yaml.safe_dump({k: v for k, v in oracle.items() if k != "selection"}))
    with pytest.raises(SpaceError, match="declares no selection: add what its search chose by"):
        confirmation_space("lf", "sqlite:///x.db", 3, "lf-vs-oracle", beside=str(committed))


@pytest.mark.parametrize("other, message", [
    (labelfree_space(), "both searches chose by label_free: confirm each on its own"),
    (hpo_space(directions=["synthetic_market->synthetic_duke"]), "its direction (synthetic_market->synthetic_duke) "
     "differ from the first search's (synthetic_duke->synthetic_market)"),
    (hpo_space(fixed={**hpo_space()["fixed"], "data.synthetic_seed": 7}), "its data settings"),
])
def test_a_search_beside_is_refused_in_one_line_unless_same_space_and_data_and_other_selection(
        monkeypatch, other, message):
    fake_search(monkeypatch, {"lf": labelfree_space(), "other": other}, {}, {"adapt.cycles": 3})
    with pytest.raises(SpaceError) as refused:
        confirmation_space("lf", "sqlite:///x.db", 3, "x", beside="other")
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_search_finds_the_confirmations_named_after_it_or_describing_its_best_trial():
    from study.paths import NOTE
    from study.report.sections import confirmation_names

    def experiment(name, note=""):
        return SimpleNamespace(name=name, tags={NOTE: note} if note else {})

    client = SimpleNamespace(search_experiments=lambda: [
        experiment("hpo-lf-d2m-confirm"), experiment("hpo-lf-d2m-confirm-synthetic7"),
        experiment("lf-vs-oracle", "The best trial of hpo-lf-d2m (trial a, ...) beside the best trial of hpo-d2m (b)"),
        experiment("hpo-lf-d2m-s7"),  # another search that shares the prefix
        experiment("other", "The best trial of hpo-lf-d2m-s7 (trial c, ...)"),  # another search's confirmation
    ])
    names = confirmation_names(SimpleNamespace(name="hpo-lf-d2m", client=client))
    assert names == ["hpo-lf-d2m-confirm", "hpo-lf-d2m-confirm-synthetic7", "lf-vs-oracle"]
    assert confirmation_names(SimpleNamespace(name="hpo-d2m", client=client)) == ["lf-vs-oracle"]

"""A tiny Optuna search end to end: TPE through Ray Tune's OptunaSearch, its study stored in SQLite."""

import pandas as pd
import pytest

from tests.tiny_studies import run_study, tiny_search

pytestmark = pytest.mark.slow


def test_tiny_search_fills_the_optuna_storage_and_the_report(tmp_path):
    space = tiny_search(tmp_path, "tiny_search", {
        "kd.mu": {"type": "uniform", "low": 0.2, "high": 0.8},
        "model.attention": {"type": "choice", "values": [["conv4", "conv5"], ["conv5"]]},
    }, {"sampler": "tpe", "num_samples": 2, "metric": "target_mAP", "mode": "max", "seed": 0},
        scheduler={"type": "none"})
    results = tmp_path / "results"
    run_study(space, results)

    import optuna

    study = optuna.load_study(study_name="tiny_search", storage=f"sqlite:///{results / 'optuna.db'}")
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 2
    for trial in complete:
        assert 0.2 <= trial.params["kd.mu"] <= 0.8
        assert 0 <= trial.value <= 100
    assert "Best trials" in (results / "tiny_search" / "README.md").read_text()


def test_multi_objective_search_reports_its_pareto_front(tmp_path):
    space = tiny_search(
        tmp_path, "tiny_mo",
        {"kd.mu": {"type": "uniform", "low": 0.1, "high": 1.0},
         "adapt.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-3}},
        {"sampler": "tpe", "num_samples": 4, "seed": 0,
         "objectives": [{"metric": "target_mAP", "mode": "max"}, {"metric": "source_mAP", "mode": "max"}],
         "start_points": [{"name": "paper default", "params": {"kd.mu": 0.5, "adapt.lr": 3.5e-5}}]})
    results = tmp_path / "results"
    run_study(space, results)
    out = results / "tiny_mo"
    text = out / "README.md"
    text = text.read_text()
    assert "## Pareto front" in text and "the starred point is paper default" in text
    assert (out / "pareto_front.png").stat().st_size > 0 and (out / "history.png").is_file()
    front = pd.read_csv(out / "pareto_front.csv")
    trials = pd.read_csv(out / "trials.csv")
    assert 1 <= len(front) <= len(trials) == 4
    for _, row in front.iterrows():  # nobody beats a front member in both objectives
        others = trials[(trials["final_target_mAP"] >= row["target_mAP"])
                        & (trials["final_source_mAP"] >= row["source_mAP"])]
        assert ((others["final_target_mAP"] > row["target_mAP"]) | (others["final_source_mAP"] > row["source_mAP"])
                ).sum() == 0

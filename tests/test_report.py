import math
import os

import optuna
import pandas as pd
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from study import report  # noqa: E402
from study.tracking import StudyTracker, TrialTracker, default_tracking_uri  # noqa: E402

VARIANTS = ["Baseline", "CSAM-ReID", "ULA(700)", "ULA(750)", "ULA(800)", "ULA(850)",
            "ULA(750)+KD(0.1)", "ULA(750)+KD(0.3)", "ULA(750)+KD(0.5)", "ULA(750)+KD(0.7)"]
DIRECTIONS = {"D->M": "synthetic_duke->synthetic_market", "M->D": "market1501->dukemtmc"}


def cycle_metrics(index: int, cycle: int) -> dict:
    """Target mAP peaks at cycle 1 and falls at cycle 2, so final and best differ."""
    target_map = 10.0 + index + (0.0, 8.5, 4.25)[cycle]
    return {
        "cycle": cycle, "epoch": 5 * cycle, "target_mAP": target_map, "target_R1": target_map + 10.0,
        "target_R5": target_map + 20.0, "target_R10": target_map + 25.0, "target_mINP": target_map / 2,
        "source_mAP": 60.0, "source_R1": 80.0,
        "ula_num_clusters": math.nan if cycle == 0 else 40.0 + cycle,
        "ula_num_labelled": math.nan if cycle == 0 else 100.0 * cycle + index,
        "ula_precision": math.nan if cycle == 0 else 0.5 + 0.125 * cycle,
        "ula_degenerate": math.nan if cycle == 0 else 0.0,
        "loss_total": 3.0 - cycle, "time_s": 1.5,
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A study shaped like a real ablation: every table row in both directions, three cycles each, plus a
    second seed of the Baseline D->M cell."""
    results = tmp_path_factory.mktemp("results")
    uri = default_tracking_uri(results)
    study_tracker = StudyTracker(uri, "ablation")
    parent_id = study_tracker.start({"variants": VARIANTS}, {"samples": 1}, resume=False)
    trials = []
    for index, (variant, column) in enumerate((v, c) for v in VARIANTS for c in DIRECTIONS):
        trials.append((f"trial_{index:02d}", variant, column, index))
    trials.append(("trial_seed1", "Baseline", "D->M", 40))
    for name, variant, column, index in trials:
        tracker = TrialTracker(uri, parent_id, name, "ablation")
        num_classes = 750 if "750" in variant else 700 if "700" in variant else 0
        tracker.start({"ula": {"num_classes": num_classes}, "kd": {"mu": 0.5 if "KD" in variant else 0.0},
                       "seed": 1 if name == "trial_seed1" else 0},
                      {"variant": variant, "direction": DIRECTIONS[column], "cache_hit": index > 0})
        for cycle in range(3):
            tracker.log_cycle(cycle_metrics(index, cycle))
        tracker.end()
    study_tracker.finish()  # only a finished study's report goes to results/<name>/
    readme = report.write_report("ablation", results, uri)
    return results, readme, {name: (variant, column, index) for name, variant, column, index in trials}


def test_outputs_exist(study):
    results, readme, _ = study
    out = results / "ablation"
    assert readme == out / "README.md"
    for name in ["trials.csv", "cycles.csv", "table1.csv", "table2.csv", "table3.csv",
                 "target_map.png", "ula.png", "importance.png"]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    first_line = readme.read_text().splitlines()[0]
    assert "python -m study.report --study ablation" in first_line and "CPUs, torch" in first_line


def test_trials_and_cycles_csv(study):
    results, _, trials = study
    frame = pd.read_csv(results / "ablation" / "trials.csv").set_index("trial")
    assert len(frame) == len(trials)
    row = frame.loc["trial_03"]  # CSAM-ReID, M->D, index 3
    assert row["variant"] == "CSAM-ReID" and row["column"] == "M->D"
    assert row["final_cycle"] == 2 and row["final_target_mAP"] == pytest.approx(13.0 + 4.25)
    assert row["best_cycle"] == 1 and row["best_target_mAP"] == pytest.approx(13.0 + 8.5)
    assert row["best_target_R1"] == pytest.approx(23.0 + 8.5)
    assert row["params.ula.num_classes"] == 0

    cycles = pd.read_csv(results / "ablation" / "cycles.csv")
    assert len(cycles) == 3 * len(trials)
    one = cycles[cycles["trial"] == "trial_03"].set_index("cycle")
    assert math.isnan(one.loc[0, "ula_precision"]) and one.loc[2, "ula_precision"] == 0.75
    assert one.loc[1, "ula_num_labelled"] == 103.0 and one.loc[2, "target_R10"] == pytest.approx(13.0 + 4.25 + 25)


def test_table1_values_and_markdown(study):
    results, readme, _ = study
    table = pd.read_csv(results / "ablation" / "table1.csv").set_index("variant")
    assert list(table.index) == ["Baseline", "CSAM-ReID", "ULA(700)", "ULA(750)", "ULA(800)", "ULA(850)"]
    # Baseline D->M: trial_00 (index 0) and trial_seed1 (index 40) averaged
    assert table.loc["Baseline", "D->M n"] == 2
    assert table.loc["Baseline", "D->M mAP final"] == pytest.approx(10.0 + 20.0 + 4.25)
    assert table.loc["ULA(750)", "M->D R1 best"] == pytest.approx(10.0 + 7 + 8.5 + 10.0)
    assert table.loc["ULA(750)", "M->D R1 paper"] == 54.7

    text = readme.read_text()
    # final: ULA(750) D->M is index 6 -> mAP 20.25, R1 30.25; M->D index 7 -> 21.25 / 31.25
    assert "| + ULA(750) | 30.2 | 48.2 | 20.2 | 32.0 | 31.2 | 54.7 | 21.2 | 35.1 |" in text
    # best cycle: +8.5 instead of +4.25
    assert "| + ULA(750) | 34.5 | 48.2 | 24.5 | 32.0 | 35.5 | 54.7 | 25.5 | 35.1 |" in text
    assert "| Baseline (ResNet50) | 44.2 (n=2) | 27.2 | 34.2 (n=2) | 14.5 |" in text


def test_table2_and_table3(study):
    results, readme, _ = study
    table2 = pd.read_csv(results / "ablation" / "table2.csv").set_index("variant")
    assert list(table2.index) == ["ULA(750)", "ULA(750)+KD(0.1)", "ULA(750)+KD(0.3)", "ULA(750)+KD(0.5)",
                                  "ULA(750)+KD(0.7)"]
    assert table2.loc["ULA(750)+KD(0.3)", "D->M mAP final"] == pytest.approx(10.0 + 14 + 4.25)
    table3 = pd.read_csv(results / "ablation" / "table3.csv").set_index("method")
    ours = table3.loc["ours, ULA(750)+KD(0.5), final cycle"]  # D->M index 16, M->D index 17
    assert ours["D->M R5"] == pytest.approx(26.0 + 4.25 + 20) and ours["M->D mAP"] == pytest.approx(27.0 + 4.25)
    assert table3.loc["PTGAN", "D->M R5"] != table3.loc["PTGAN", "D->M R5"]  # "-" in the paper -> NaN
    text = readme.read_text()
    assert "| + KD(0.5) | 40.2 | 48.6 | 30.2 | 33.1 | 41.2 | 56.5 | 31.2 | 36.1 |" in text
    assert "| ours, ULA(750)+KD(0.5), best cycle | 44.5 | 54.5 | 59.5 | 34.5 | 45.5 | 55.5 | 60.5 | 35.5 |" in text
    assert "| PTGAN | 27.4 | – | 50.7 | – |" in text


def test_search_sections(study):
    _, readme, _ = study
    text = readme.read_text()
    best = text.split("## Best trials")[1].split("##")[0]
    assert best.index("trial_seed1") < best.index("trial_19")  # index 40 beats index 19
    assert "| trial_seed1 | Baseline | synthetic_duke->synthetic_market | finished | 2 | 54.2 | 64.2 | 58.5 (1) |" in best
    importance = text.split("## Parameter importances")[1].split("##")[0]
    assert "ula.num_classes" in importance and "kd.mu" in importance and "seed" in importance
    ula = text.split("## ULA diagnostics per trial")[1]
    assert "<summary>CSAM-ReID (trial_03)</summary>" in ula
    assert "| 2 | 42 | 203 | 0.750 | 0 | 17.2 |" in ula


def test_importances_pick_the_parameter_that_matters():
    rows = []
    for i in range(12):
        rows.append({"trial": f"t{i}", "cycles": 3, "final_target_mAP": 10.0 * (i % 3),
                     "params.ula.eps": json_number(0.6 + 0.1 * (i % 3)), "params.noise": str(i % 2)})
    importances = report.importances_from_trials(pd.DataFrame(rows))
    assert max(importances, key=importances.get) == "ula.eps"
    assert set(importances) == {"ula.eps", "noise"}


def test_importances_from_optuna_storage(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="search", storage=storage, direction="maximize")
    for eps, noise in [(0.5, 0), (0.7, 1), (0.9, 0), (0.6, 1), (0.8, 0)]:
        study.enqueue_trial({"ula.eps": eps, "noise": noise})
    study.optimize(lambda t: 100 * t.suggest_float("ula.eps", 0.5, 0.9) + 0 * t.suggest_int("noise", 0, 1),
                   n_trials=5)
    importances = report.importances_from_optuna("search", storage)
    assert importances["ula.eps"] > importances["noise"]
    with pytest.raises(ValueError, match="has no study 'other'"):
        report.importances_from_optuna("other", storage)


def json_number(value: float) -> str:
    return str(round(value, 3))


def test_cli_and_errors(study, capsys):
    results, _, _ = study
    report.main(["--study", "ablation", "--results-dir", str(results)])
    assert capsys.readouterr().out.strip() == str(results / "ablation" / "README.md")
    with pytest.raises(SystemExit) as exit_info:
        report.main(["--study", "nope", "--results-dir", str(results)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "no MLflow experiment named 'nope'" in message and len(message.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="plain folder name"):
        report.write_report("a/b", results, default_tracking_uri(results))


def test_table_column():
    assert report.table_column("dukemtmc->market1501") == "D->M"
    assert report.table_column("msmt17->synthetic_market") == "D->M"
    assert report.table_column("market1501->dukemtmc") == "M->D"
    assert report.table_column("market1501") is None and report.table_column(None) is None


def test_no_importances_when_the_objective_does_not_vary():
    import pandas as pd

    from study.report import importances_from_trials

    trials = pd.DataFrame({"cycles": [2, 2, 2], "final_target_mAP": [40.0, 40.0, 40.0],
                           "params.kd.mu": ["0.1", "0.3", "0.5"]})
    assert importances_from_trials(trials) == {}
    trials["final_target_mAP"] = [40.0, 45.0, 50.0]
    assert set(importances_from_trials(trials)) == {"kd.mu"}

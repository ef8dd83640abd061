import math
import os
import re

import optuna
import pandas as pd
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from ray.tune import Checkpoint  # noqa: E402

from reidmodel.checkpoint import write_csv  # noqa: E402
from reidmodel.cycle_metrics import metric  # noqa: E402
from study import publish  # noqa: E402
from study.paths import default_tracking_uri  # noqa: E402
from study.report import optuna_view, sections  # noqa: E402
from study.report.load import LoadedStudy  # noqa: E402
from study.report.write import write_report  # noqa: E402
from study.spaces import table_column  # noqa: E402
from study.tracking import StudyTracker, TrialLogger  # noqa: E402
from study.trial import TrialConfigs  # noqa: E402
from tests.tiny_studies import fake_trial  # noqa: E402

VARIANTS = ["Baseline", "CSAM-ReID", "ULA(700)", "ULA(750)", "ULA(800)", "ULA(850)",
            "ULA(750)+KD(0.1)", "ULA(750)+KD(0.3)", "ULA(750)+KD(0.5)", "ULA(750)+KD(0.7)"]
DIRECTIONS = {"D->M": "synthetic_duke->synthetic_market", "M->D": "market1501->dukemtmc"}
T95_1DF = 12.706204736  # Student t, 97.5% quantile, 1 degree of freedom (two seeds)


def cycle_metrics(index: int, seed: int, cycle: int, requested: float) -> dict:
    """Target mAP peaks at cycle 1 and falls at cycle 2, so final and best differ; seed 1 adds 1 + index % 3."""
    target_map = 10.0 + index + (0.0, 8.5, 4.25)[cycle] + seed * (1 + index % 3)
    return {
        "cycle": cycle, "epoch": 5 * cycle, "target_mAP": target_map, "target_R1": target_map + 10.0,
        "target_R5": target_map + 20.0, "target_R10": target_map + 25.0, "target_mINP": target_map / 2,
        "source_mAP": 60.0, "source_R1": 80.0,
        "ula_num_clusters": math.nan if cycle == 0 else 40.0 + cycle,
        "ula_requested_classes": math.nan if cycle == 0 else requested,
        "ula_num_labelled": math.nan if cycle == 0 else 100.0 * cycle + index,
        "ula_precision": math.nan if cycle == 0 else 0.5 + 0.125 * cycle,
        "ula_degenerate": math.nan if cycle == 0 else 0.0,
        "loss_total": 3.0 - cycle, "time_s": 1.5,
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The real ablation space on two seeds: every variant in both directions, three cycles each. K is 30
    (below the 41-42 clusters) except for ULA(850), whose K of 45 never binds."""
    from study.spaces import load_space

    results, tmp = tmp_path_factory.mktemp("results"), tmp_path_factory.mktemp("trial")
    uri = default_tracking_uri(results)
    space = load_space("ablation", seeds=[0, 1]).model_dump(mode="json")
    study_tracker = StudyTracker(uri, "ablation")
    parent_id = study_tracker.start(space, {"samples": 1}, resume=False)
    logger = TrialLogger(uri, parent_id, "ablation", "none", TrialConfigs())
    trials = {}
    for index, (variant, column) in enumerate((v, c) for v in VARIANTS for c in DIRECTIONS):
        for seed in (0, 1):
            name = f"trial_{index:02d}_s{seed}"
            trials[name] = (variant, column, index, seed)
            trial = fake_trial(name, name=name, variant=variant, direction=DIRECTIONS[column], seed=seed,
                               overrides={"ula.num_classes": index % 4 + 1, "kd.mu": 0.5 if "KD" in variant else 1.0},
                               last_result={"cycle": 2})
            logger.log_trial_start(trial)
            rows = [cycle_metrics(index, seed, cycle, 45.0 if variant == "ULA(850)" else 30.0) for cycle in range(3)]
            for cycle, row in enumerate(rows):
                logger.log_trial_result(cycle, trial, row)
            folder = tmp / name
            folder.mkdir()
            write_csv(folder / "cycles.csv", rows)  # as a trial's checkpoint folder holds it
            logger.on_checkpoint(3, [], trial, Checkpoint.from_directory(str(folder)))
            logger.log_trial_end(trial)
    study_tracker.finish()  # only a finished study's report goes to results/<name>/
    readme = write_report("ablation", results, uri)
    return results, readme, trials


def squash(text: str) -> str:
    """Markdown tables pad their cells; compare with single spaces."""
    return re.sub(r" +", " ", text)


def final_map(index: int, seed: int) -> float:
    return 10.0 + index + 4.25 + seed * (1 + index % 3)


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
    assert len(frame) == len(trials) == 40
    row = frame.loc["trial_03_s1"]  # CSAM-ReID, M->D, index 3, seed 1
    assert row["variant"] == "CSAM-ReID" and row["column"] == "M->D" and row["seed"] == 1
    assert row["final_cycle"] == 2 and row["final_target_mAP"] == pytest.approx(final_map(3, 1))
    assert row["best_cycle"] == 1 and row["best_target_mAP"] == pytest.approx(final_map(3, 1) + 4.25)
    assert row["params.ula.num_classes"] == 4  # index % 4 + 1

    cycles = pd.read_csv(results / "ablation" / "cycles.csv")
    assert len(cycles) == 3 * len(trials)
    one = cycles[cycles["trial"] == "trial_03_s0"].set_index("cycle")
    assert math.isnan(one.loc[0, "ula_precision"]) and one.loc[2, "ula_precision"] == 0.75


def test_cells_are_means_with_t_intervals_and_paired_differences(study):
    """Hand computation: ULA(750) D->M is index 6, ULA(700) D->M index 4; two seeds each."""
    results, readme, _ = study
    table = pd.read_csv(results / "ablation" / "table1.csv").set_index("variant")
    ula750 = [final_map(6, 0), final_map(6, 1)]  # 20.25, 21.25
    ula700 = [final_map(4, 0), final_map(4, 1)]  # 18.25, 20.25
    mean = sum(ula750) / 2
    half_width = T95_1DF * abs(ula750[1] - ula750[0]) / 2  # t * sd / sqrt(2), sd = |a - b| / sqrt(2)
    assert table.loc["ULA(750)", "D->M mAP mean"] == pytest.approx(mean)
    assert table.loc["ULA(750)", "D->M mAP ci95"] == pytest.approx(half_width)
    assert table.loc["ULA(750)", "D->M mAP n"] == 2
    assert table.loc["ULA(750)", "D->M mAP paper"] == 32.0
    diffs = [a - b for a, b in zip(ula750, ula700, strict=True)]  # 2.0, 1.0
    assert table.loc["ULA(750)", "D->M diff mean"] == pytest.approx(sum(diffs) / 2)
    assert table.loc["ULA(750)", "D->M diff ci95"] == pytest.approx(T95_1DF * abs(diffs[0] - diffs[1]) / 2)

    text = squash(readme.read_text())
    row = next(line for line in text.splitlines() if line.startswith("| + ULA(750) "))
    assert "| 20.8 ± 6.4 |" in row and "+1.5 ± 6.4 (n.s.) vs ULA(700)" in row
    assert "- K = 750 beats K = 700: D->M: **not significant**, +1.5 ± 6.4 mAP (n=2)" in text


def test_k_binding_is_shown_per_row(study):
    _, readme, _ = study
    section = squash(readme.read_text()).split("### Does K bind? (table1)")[1].split("##")[0]
    assert "- + ULA(750), D->M: K bound in 4 of 4 cycles (2 trials)" in section
    assert "- + ULA(850), M->D: K bound in 0 of 4 cycles (2 trials) — **K did not bind in every cycle**" in section
    assert "| + ULA(850) | D->M | 1 | 41-41 | 45 |" in section


def test_table2_and_table3(study):
    results, readme, _ = study
    table2 = pd.read_csv(results / "ablation" / "table2.csv").set_index("variant")
    assert list(table2.index) == ["ULA(750)", "ULA(750)+KD(0.1)", "ULA(750)+KD(0.3)", "ULA(750)+KD(0.5)",
                                  "ULA(750)+KD(0.7)"]
    table3 = pd.read_csv(results / "ablation" / "table3.csv").set_index("label")
    ours = table3.loc["ours: CSAM-ReID + ULA(750) + KD(0.5)"]  # D->M index 16
    assert ours["D->M R5 mean"] == pytest.approx((final_map(16, 0) + final_map(16, 1)) / 2 + 20)
    assert math.isnan(table3.loc["PTGAN", "D->M R5 paper"])  # "-" in the paper
    text = squash(readme.read_text())
    assert "| PTGAN | | | 27.4 | | – | | 50.7 | | – |" in text  # other methods: the paper's values only
    assert "- KD(0.5) improves on ULA(750) alone: D->M:" in text


def test_search_sections(study):
    _, readme, _ = study
    text = squash(readme.read_text())
    best = text.split("## Best trials")[1].split("##")[0]
    assert best.index("trial_19_s1") < best.index("trial_19_s0")  # seed 1 adds 1 + 19 % 3
    assert f"| trial_19_s1 | ULA(750)+KD(0.7) | market1501->dukemtmc | finished | 2 | {final_map(19, 1):.1f} |" in best
    importance = text.split("## Parameter importances")[1].split("##")[0]
    assert "ula.num_classes" in importance and "kd.mu" in importance
    ula = text.split("## ULA diagnostics per trial")[1]
    assert "<summary>CSAM-ReID (trial_03_s0)</summary>" in ula
    assert "| 2 | 42 | 30 | 203 | 0.750 | 0 | 17.2 |" in ula


def test_search_history_carries_the_best_across_trials_stopped_early():
    trials = pd.DataFrame({"trial": list("abcde"), "cycles": 3, "final_target_mAP": [70.0, 90.0, 60.0, 80.0, 85.0],
                           "outcome": ["finished", "stopped early (asha)", "failed", "finished", "running"]})
    history = optuna_view.history_study(trials)  # 90 was stopped early: it never counts
    assert [t.state.name for t in history.trials] == ["COMPLETE", "PRUNED", "PRUNED", "COMPLETE", "PRUNED"]
    assert history.best_trial.user_attrs["trial"] == "d" and history.best_value == 80.0


def test_importances_pick_the_parameter_that_matters():
    rows = []
    for i in range(12):
        rows.append({"trial": f"t{i}", "cycles": 3, "final_target_mAP": 10.0 * (i % 3),
                     "params.ula.eps": json_number(0.6 + 0.1 * (i % 3)), "params.noise": str(i % 2)})
    importances = from_trials(pd.DataFrame(rows))
    assert max(importances, key=importances.get) == "ula.eps"
    assert set(importances) == {"ula.eps", "noise"}


def test_importances_from_optuna_storage(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="search", storage=storage, direction="maximize")
    for eps, noise in [(0.5, 0), (0.7, 1), (0.9, 0), (0.6, 1), (0.8, 0)]:
        study.enqueue_trial({"ula.eps": eps, "noise": noise})
    study.optimize(lambda t: 100 * t.suggest_float("ula.eps", 0.5, 0.9) + 0 * t.suggest_int("noise", 0, 1),
                   n_trials=5)
    stored = optuna_view.importance_study(pd.DataFrame(), "search", storage, ["target_mAP"])
    importances = optuna_view.importances(stored)["target_mAP"]
    assert importances["ula.eps"] > importances["noise"]
    with pytest.raises(ValueError, match="has no study 'other'"):
        optuna_view.importance_study(pd.DataFrame(), "other", storage, ["target_mAP"])


def from_trials(trials: pd.DataFrame) -> dict[str, float]:
    """fANOVA importances for final-cycle target mAP from the runs alone; {} when there are none."""
    study = optuna_view.importance_study(trials, "grid", None, ["target_mAP"])
    return optuna_view.importances(study)["target_mAP"] if study else {}


def json_number(value: float) -> str:
    return str(round(value, 3))


def test_cli_and_errors(study, capsys):
    results, _, _ = study
    publish.main(["--study", "ablation", "--results-dir", str(results)])
    assert capsys.readouterr().out.strip() == str(results / "ablation" / "README.md")
    with pytest.raises(SystemExit) as exit_info:
        publish.main(["--study", "nope", "--results-dir", str(results)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "no MLflow experiment named 'nope'" in message and len(message.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="plain folder name"):
        write_report("a/b", results, default_tracking_uri(results))


def test_table_column():
    assert table_column("dukemtmc->market1501") == "D->M"
    assert table_column("msmt17->synthetic_market") == "D->M"
    assert table_column("market1501->dukemtmc") == "M->D"
    assert table_column("market1501") is None and table_column(None) is None


def test_no_importances_when_the_objective_does_not_vary():
    trials = pd.DataFrame({"trial": ["a", "b", "c"], "cycles": [2, 2, 2], "final_target_mAP": [40.0, 40.0, 40.0],
                           "params.kd.mu": ["0.1", "0.3", "0.5"]})
    assert from_trials(trials) == {}
    trials["final_target_mAP"] = [40.0, 45.0, 50.0]
    assert set(from_trials(trials)) == {"kd.mu"}


def test_ula_diagnostics_take_labels_and_formats_from_the_metric_registry(study):
    _, readme, _ = study
    text = squash(readme.read_text())
    logged = ("ula_num_clusters", "ula_requested_classes", "ula_num_labelled", "ula_precision", "ula_degenerate",
              "target_mAP")
    header = "| " + " | ".join(metric(key).label for key in ("cycle", *logged)) + " |"
    assert header == "| cycle | clusters | K | labelled | precision | degenerate | target mAP |" and header in text
    assert "| 0 | – | – | – | – | – | 10.0 |\n| 1 | 41 | 30 | 100 | 0.625 | 0 | 18.5 |" in text
    assert (sections.cell("ula_precision", 0.875), sections.cell("target_mAP", 24.13), sections.cell("ula_recall", None),
            sections.cell("target_mAP", math.nan)) == ("0.875", "24.1", "–", "–")


def test_cost_adds_up_the_sittings_of_a_resumed_study(tmp_path):
    from mlflow import MlflowClient

    uri = default_tracking_uri(tmp_path)
    tracker = StudyTracker(uri, "resumed")
    tracker.start({}, {}, resume=False)
    tracker.finish("KILLED", {"study_wall_seconds": 600.0})
    run_id = tracker.start({}, {}, resume=True)
    tracker.finish("FINISHED", {"study_wall_seconds": 900.0})
    study = LoadedStudy("resumed", uri, MlflowClient(uri), MlflowClient(uri).get_run(run_id), pd.DataFrame(),
                               {}, pd.DataFrame(), pd.DataFrame())
    line = sections.cost_line(study)
    assert line.startswith("- Cost: 25.0 min wall time in 2 sittings (10.0 + 15.0 min);"), line


def test_trial_frame_keeps_trials_without_cycles_and_says_how_each_run_ended():
    from study.report.load import trial_frame

    children = pd.DataFrame({
        "run_id": ["r1", "r2", "r3"], "status": ["FINISHED", "KILLED", "FAILED"], "tags.trial_name": ["a", "b", "c"],
        "tags.seed": ["0", "", "1"], "params.runtime.seed": ["0", "7", "1"], "params.kd.mu": ["0.5"] * 3,
        "tags.direction": ["dukemtmc->market1501"] * 3, "tags.stop_reason": [None, "asha at cycle 1", None]})
    cycles = pd.DataFrame({"trial": ["a", "a", "b"], "cycle": [0, 1, 0], "target_mAP": [10.0, 12.0, 9.0]})
    trials = trial_frame(children, cycles).set_index("trial")
    assert trials["outcome"].tolist() == ["finished", "stopped early (asha at cycle 1)", "failed"]
    assert trials["seed"].tolist() == [0, 7, 1] and trials["column"].tolist() == ["D->M"] * 3
    assert trials["cycles"].tolist() == [2, 1, 0] and math.isnan(trials.loc["c", "final_target_mAP"])
    assert (trials.loc["a", "final_cycle"], trials.loc["a", "best_target_mAP"]) == (1, 12.0)
    assert trials.loc["a", "params.kd.mu"] == "0.5"


@pytest.mark.parametrize("space, says", [
    ({"kind": "search", "selection": "oracle", "search": {"metric": "target_mAP"}}, "**Oracle-selected**"),
    ({"kind": "search", "search": {"metric": "target_mAP"}}, "**Oracle-selected**"),  # logged before the key
    ({"kind": "grid", "selection": "oracle"}, "**Oracle-selected**"),  # a confirmation of an oracle search
    ({"kind": "search", "selection": "validation", "search": {"metric": "target_val_mAP"}},
     "**Selected on target validation labels** (by `target_val_mAP`)"),
    ({"kind": "search", "search": {"metric": "snd"}}, None),
])
def test_the_header_says_when_target_labels_chose_the_settings(tmp_path, space, says):
    from mlflow import MlflowClient

    uri = default_tracking_uri(tmp_path)
    run_id = StudyTracker(uri, "chosen").start({}, {}, resume=False)
    trials = pd.DataFrame({"outcome": ["finished"], "seed": [0], "machine": [None]})
    study = LoadedStudy("chosen", uri, MlflowClient(uri), MlflowClient(uri).get_run(run_id), pd.DataFrame(),
                               space, pd.DataFrame(), trials)
    header = "\n".join(sections.header_lines(study, "python -m study.report --study chosen"))
    top = header.split("- MLflow:")[0]  # before the study's facts, right under its title
    if says is None:
        assert "selected" not in header.lower()
    else:
        assert says in top and "target" in top


def test_a_grid_without_selection_has_no_oracle_header_and_keeps_its_oracle_best_cycle_table(study):
    _, readme, _ = study
    text = readme.read_text()
    assert "Oracle-selected" not in text
    assert "(an oracle: it picks the cycle with target labels)" in text


def test_the_header_says_where_the_trials_computed():
    trials = pd.DataFrame({"machine": ["Xeon (AVX512 kernels), 1 thread(s), torch 2.14.1"] * 2
                           + ["H100, 4 thread(s), torch 2.14.1", None]})
    assert sections.machines_line(trials) == (
        "- Trials ran on: Xeon (AVX512 kernels), 1 thread(s), torch 2.14.1 (2 trials); H100, 4 thread(s), torch "
        "2.14.1 (1 trial); not recorded for 1 (no cycle reported, or logged before trials recorded it)")


def test_a_study_logged_before_the_machine_tag_says_so(study):
    _, readme, _ = study
    assert "- Trials ran on: not recorded for 40 (" in readme.read_text()

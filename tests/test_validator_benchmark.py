"""The validator benchmark on hand-made studies whose answers are known."""

import math
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from study import validators
from study.report import validators as statistics
from study.report.validators import (
    benchmark,
    benchmark_lines,
    bootstrap,
    checkpoint_gains,
    chosen_cycles,
    regret,
    spearman,
    weighted_spearman,
)

FINAL_MAP = [12.0, 30.0, 18.0, 25.0, 8.0, 21.0, 15.0, 27.0, 10.0, 23.0]


def fake_study(name: str, final_map: list[float], validator: dict[str, list[float]],
               outcomes: list[str] | None = None) -> SimpleNamespace:
    """One trial per final mAP, two cycles each: cycle 1 at half the final mAP, then the final; each validator
    takes the given final-cycle values and, at cycle 1, values below every final one."""
    rows = []
    for index, value in enumerate(final_map):
        for cycle, share in ((0, 0.1), (1, 0.5), (2, 1.0)):
            row = {"trial": f"t{index}", "cycle": cycle, "target_mAP": value * share}
            row.update({key: (values[index] if cycle == 2 else -100.0) for key, values in validator.items()})
            rows.append(row)
    trials = pd.DataFrame({"trial": [f"t{i}" for i in range(len(final_map))],
                           "outcome": outcomes or ["finished"] * len(final_map),
                           "direction": ["synthetic_duke->synthetic_market"] * len(final_map),
                           "column": ["D->M"] * len(final_map)})
    return SimpleNamespace(name=name, cycles=pd.DataFrame(rows), trials=trials)


def row_of(rows: list[dict], name: str) -> dict:
    return next(row for row in rows if row["validator"] == name)


def test_a_validator_identical_to_the_test_map_is_perfect_and_a_reversed_one_is_worst():
    truth = np.array(FINAL_MAP)
    study = fake_study("s", FINAL_MAP, {"snd": FINAL_MAP, "bnm": [-v for v in FINAL_MAP]})
    rows = benchmark([study], resamples=50)
    snd, bnm = row_of(rows, "snd"), row_of(rows, "bnm")
    assert snd["spearman"][0] == pytest.approx(1.0) and snd["weighted_spearman"][0] == pytest.approx(1.0)
    assert snd["regret"] == 0.0 and snd["trials"] == len(FINAL_MAP)
    assert bnm["spearman"][0] == pytest.approx(-1.0) and bnm["weighted_spearman"][0] == pytest.approx(-1.0)
    assert bnm["regret"] == truth.min() - truth.max()  # it picks the worst trial
    oracle = rows[-1]
    assert oracle["validator"] == "target_mAP" and oracle["spearman"][0] == pytest.approx(1.0) and oracle["regret"] == 0


def test_the_noise_fraction_is_better_lower():
    study = fake_study("s", FINAL_MAP, {"ula_noise_fraction": [-v / 100 for v in FINAL_MAP]})
    noise = row_of(benchmark([study], resamples=20), "ula_noise_fraction")
    assert noise["spearman"][0] == pytest.approx(1.0) and noise["regret"] == 0.0


def test_spearman_is_scipys_and_the_weights_count_the_validators_top():
    rng = np.random.default_rng(0)
    score, truth = rng.normal(size=30), rng.normal(size=30)
    assert spearman(score, truth) == pytest.approx(stats.spearmanr(score, truth).statistic)
    truth = np.arange(10.0)
    top_wrong = np.array([0, 1, 2, 3, 4, 5, 6, 9, 8, 7.0])  # the three it ranks highest are in reverse order
    bottom_wrong = np.array([2, 1, 0, 3, 4, 5, 6, 7, 8, 9.0])  # the three it ranks lowest are
    assert spearman(top_wrong, truth) == pytest.approx(spearman(bottom_wrong, truth))
    assert weighted_spearman(top_wrong, truth) < spearman(top_wrong, truth) < weighted_spearman(bottom_wrong, truth)
    assert math.isnan(spearman(np.ones(5), truth[:5]))  # a constant validator ranks nothing


def test_the_bootstrap_interval_holds_the_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=25)
    samples = [(truth + rng.normal(scale=0.8, size=25), truth)]
    value, low, high = bootstrap(samples, spearman, seed=3, resamples=300)
    assert low < value < high and 0 < value < 1 and high - low > 0.05
    assert bootstrap(samples, spearman, seed=3, resamples=300) == (value, low, high)
    assert bootstrap(samples, spearman, seed=4, resamples=300) != (value, low, high)


def test_checkpoint_selection_picks_the_cycle_the_validator_ranks_first():
    cycles = pd.DataFrame({
        "trial": ["a"] * 3 + ["b"] * 3, "cycle": [1, 2, 3] * 2,
        "target_mAP": [10.0, 20.0, 15.0, 30.0, 25.0, 28.0],
        "snd": [0.1, 0.9, 0.5, 0.2, 0.3, 0.1],  # a: cycle 2 (+5 over its last), b: cycle 2 (-3)
        "loss_total": [3.0, 2.0, 1.0, 1.0, 2.0, 3.0],  # lower is better: a: cycle 3 (+0), b: cycle 1 (+2)
    })
    assert checkpoint_gains(cycles, "snd").tolist() == [5.0, -3.0]
    assert checkpoint_gains(cycles, "loss_total").tolist() == [0.0, 2.0]
    assert checkpoint_gains(cycles, "target_mAP").tolist() == [5.0, 2.0]  # the oracle's: the best cycle


def test_checkpoint_gain_in_the_benchmark_is_the_mean_over_trials():
    # The validator peaks at the last cycle of every trial: no gain; the oracle's is 0 too (mAP rises).
    study = fake_study("s", FINAL_MAP, {"snd": FINAL_MAP})
    rows = benchmark([study], resamples=20)
    assert row_of(rows, "snd")["checkpoint_gain"][0] == 0.0 and rows[-1]["checkpoint_gain"][0] == 0.0


def test_failed_and_running_trials_and_the_source_cycle_are_left_out():
    outcomes = ["finished", "stopped early (asha)", "failed", "running", *["finished"] * 6]
    study = fake_study("s", FINAL_MAP, {"snd": FINAL_MAP}, outcomes)
    cycles = chosen_cycles(study)
    assert set(cycles["trial"]) == {"t0", "t1", *(f"t{i}" for i in range(4, 10))} and cycles["cycle"].min() == 1
    assert row_of(benchmark([study], resamples=5), "snd")["trials"] == 8


def test_several_studies_are_averaged_not_pooled():
    agree = fake_study("agree", FINAL_MAP, {"snd": FINAL_MAP})
    disagree = fake_study("disagree", [v + 50 for v in FINAL_MAP], {"snd": [-v for v in FINAL_MAP]})
    snd = row_of(benchmark([agree, disagree], resamples=20), "snd")
    assert snd["spearman"][0] == pytest.approx(0.0) and snd["trials"] == 2 * len(FINAL_MAP)
    assert snd["per_study"]["agree D->M"][0] == pytest.approx(1.0) and snd["per_study"]["disagree D->M"][0] == pytest.approx(-1.0)


def test_the_markdown_says_it_reads_target_labels_and_names_the_studies():
    study = fake_study("hpo-x", FINAL_MAP, {"snd": FINAL_MAP, "ula_noise_fraction": [0.1] * len(FINAL_MAP)})
    text = "\n".join(benchmark_lines([study], resamples=20))
    assert "Computed **with target labels**" in text and "`hpo-x` (10 trials, synthetic_duke->synthetic_market)" in text
    snd_line = next(line for line in text.splitlines() if line.startswith("| `snd`"))
    assert "| none " in snd_line and "| higher " in snd_line and "1.00 [1.00, 1.00]" in snd_line
    noise_line = next(line for line in text.splitlines() if line.startswith("| `ula_noise_fraction`"))
    assert "| lower " in noise_line and "| – " in noise_line  # constant: no correlation to show
    assert "| `target_mAP` (oracle: the test mAP itself) | oracle " in text


def test_enough_trials_for_a_report_section():
    assert statistics.trials_with_validators(fake_study("s", FINAL_MAP[:7], {"snd": FINAL_MAP[:7]})) == 7
    assert statistics.trials_with_validators(fake_study("s", FINAL_MAP, {})) == 0
    assert statistics.MIN_TRIALS == 8


def test_regret_takes_the_first_of_a_tie():
    assert regret(np.array([1.0, 1.0, 0.0]), np.array([5.0, 9.0, 7.0])) == -4.0


def test_the_cli_refuses_a_missing_results_folder_in_one_line(tmp_path, capsys):
    code = validators.main(["--study", "x", "--results-dir", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --results-dir") and err.count("\n") == 1


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """Eight finished trials of two cycles in MLflow, as the driver logs them; snd follows the final mAP."""
    from ray.tune import Checkpoint

    from reidmodel.checkpoint import write_csv
    from study.paths import default_tracking_uri
    from study.tracking import StudyTracker, TrialLogger
    from study.trial import TrialConfigs
    from tests.tiny_studies import fake_trial

    results, tmp = tmp_path_factory.mktemp("results"), tmp_path_factory.mktemp("trials")
    uri = default_tracking_uri(results)
    tracker = StudyTracker(uri, "logged")
    logger = TrialLogger(uri, tracker.start({"kind": "grid"}, {}, resume=False), "logged", "none", TrialConfigs())
    for index, final in enumerate(FINAL_MAP[:8]):
        trial = fake_trial(f"t{index}", name=f"t{index}", variant=f"v{index}", seed=0, last_result={"cycle": 2})
        logger.log_trial_start(trial)
        rows = [{"cycle": cycle, "target_mAP": final * (0.5 + cycle / 4), "snd": final + cycle} for cycle in range(3)]
        for row in rows:
            logger.log_trial_result(row["cycle"], trial, row)
        write_csv(tmp / f"t{index}.csv", rows)
        (tmp / f"t{index}").mkdir()
        (tmp / f"t{index}" / "cycles.csv").write_bytes((tmp / f"t{index}.csv").read_bytes())
        logger.on_checkpoint(3, [], trial, Checkpoint.from_directory(str(tmp / f"t{index}")))
        logger.log_trial_end(trial)
    tracker.finish()
    return results


def test_the_cli_reads_the_studies_from_mlflow_and_writes_the_table(logged, capsys):
    assert validators.main(["--study", "logged", "--results-dir", str(logged), "--resamples", "50"]) == 0
    printed = capsys.readouterr().out
    written = (logged / "logged" / "validators.md").read_text()
    assert printed == written
    assert written.startswith("Written by `python -m study.validators --study logged --results-dir ")
    assert "`logged` (8 trials," in written
    snd_line = next(line for line in written.splitlines() if line.startswith("| `snd`"))
    assert "| 8 " in snd_line and "| 1.00 [1.00, 1.00] " in snd_line and "| +0.0 " in snd_line


def test_the_study_report_has_the_benchmark_section(logged):
    from study.paths import default_tracking_uri
    from study.report.write import write_report

    text = write_report("logged", logged, default_tracking_uri(logged), out=logged / "report").read_text()
    section = re.sub(r" +", " ", text.split("## Validator benchmark (reads target labels)")[1].split("\n## ")[0])
    assert "Computed **with target labels**" in section and "| `snd` (SND) | none | higher | 8 |" in section
    assert "python -m study.validators --study logged --study OTHER" in section


def test_the_cli_refuses_studies_without_validators(logged, capsys):
    from unittest import mock

    with mock.patch.object(statistics, "VALIDATOR_KEYS", ("bnm",)):
        code = validators.main(["--study", "logged", "--results-dir", str(logged)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no finished trial of logged logged a validator" in err


def test_a_validator_that_only_tells_the_directions_apart_earns_nothing():
    """Both directions in one study, M->D some 10 mAP higher: a score that is 1 for every M->D trial and 0 for every
    D->M one would have a high Spearman over the pooled trials, but ranks no trial within a direction."""
    d2m = fake_study("mixed", [50.0, 52.0, 54.0, 56.0], {"source_mAP": [0.0] * 4})
    m2d = fake_study("mixed", [64.0, 66.0, 68.0, 70.0], {"source_mAP": [1.0] * 4})
    m2d.cycles["trial"] = "m" + m2d.cycles["trial"]
    m2d.trials = m2d.trials.assign(trial="m" + m2d.trials["trial"], column="M->D")
    mixed = SimpleNamespace(name="mixed", cycles=pd.concat([d2m.cycles, m2d.cycles], ignore_index=True),
                            trials=pd.concat([d2m.trials, m2d.trials], ignore_index=True))
    (row,) = [r for r in benchmark([mixed], resamples=50) if r["validator"] == "source_mAP"]
    assert set(row["per_study"]) == {"mixed D->M", "mixed M->D"}
    assert not np.isfinite(row["spearman"][0])  # constant within each direction: no ranking at all


def test_im_over_log_k_is_derived_for_studies_logged_before_it():
    """A study that logged IM and the ULA class count but not the ratio gets IM / log K, none for a degenerate
    cycle (its classifier is an earlier cycle's); a study that logged the ratio keeps its own."""
    study = fake_study("s", FINAL_MAP[:4], {"info_max": [2.0, 3.0, 1.0, 2.0], "ula_num_classes": [8, 20, 8, 1],
                                            "ula_degenerate": [0, 0, 1, 0]})
    final = chosen_cycles(study).groupby("trial").tail(1).set_index("trial")["info_max_ratio"]
    assert final["t0"] == pytest.approx(2 / math.log(8)) and final["t1"] == pytest.approx(3 / math.log(20))
    assert math.isnan(final["t2"]) and math.isnan(final["t3"])
    logged = fake_study("s", FINAL_MAP[:4], {"info_max": [2.0] * 4, "ula_num_classes": [8] * 4,
                                             "ula_degenerate": [0] * 4, "info_max_ratio": [0.5] * 4})
    assert (chosen_cycles(logged).groupby("trial").tail(1)["info_max_ratio"] == 0.5).all()

"""The validator benchmark's statistics and Markdown, for ``python -m study.validators`` and the study report:
how well each label-free validator ranks trials and cycles by the target test mAP.

It reads target labels on purpose: it measures each validator against the oracle (the final target test mAP), so
that a validator can be chosen on studies other than the one it is then used to search. Per validator (the
nine of reidmodel.validators, IM / log K derived for studies logged before it was; the training loss and the
source mAP, label-free baselines; the target validation mAP where measured; and the oracle itself as the
ceiling; each turned by its direction in reidmodel.cycle_metrics), over each study's trials that ended on a
cycle of their choosing (finished, or stopped by the scheduler), at each trial's last cycle:

- Spearman correlation with the final target mAP;
- weighted Spearman (Musgrave, Belongie, Lim 2022): the Pearson correlation of the two rankings with each trial
  weighted by its rank under the validator (dense, divided by the highest, to the power WEIGHT_POWER = 2), as
  their benchmark code (powerful-benchmarker) weights it, with the power as its parameter: the trials a
  validator would pick count most, those it ranks last hardly at all;
- selection regret: the target mAP of the trial the validator ranks first minus the best trial's (0 is perfect);
- checkpoint selection: within each trial, the adaptation cycle (1 on; the source-only cycle 0 is not a
  candidate) the validator ranks first against the trial's last cycle: the mean target mAP gained.

Each statistic is computed per study and direction (a group) and averaged over the groups: directions differ in
scale (M->D ends some 10 mAP above D->M here), and pooling their trials would reward a validator for telling the
directions apart, as the source mAP does, not for ranking trials. The 95% intervals are the 2.5 and 97.5
percentiles of a seeded bootstrap that resamples trials within each group.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from reidmodel.cycle_metrics import HIGHER, MISSING, VALIDATOR_KEYS, metric
from study.report.load import OBJECTIVE
from study.tables import markdown_table

if TYPE_CHECKING:
    from study.report.load import LoadedStudy

CANDIDATES = (*VALIDATOR_KEYS, "loss_total", "source_mAP", "target_val_mAP")
WEIGHT_POWER = 2  # of the normalised validator rank, in the weighted Spearman
RESAMPLES = 1000
MIN_TRIALS = 8  # a study report shows the benchmark from this many trials with validators
Interval = tuple[float, float, float]  # estimate, 2.5 and 97.5 percentiles


def chosen_cycles(study: LoadedStudy) -> pd.DataFrame:
    """The adaptation cycles (1 on) with target mAP of the trials that ended on a cycle of their choosing: a failed
    or still running trial's last cycle is not its result."""
    trials, cycles = study.trials, study.cycles
    ended = trials.loc[trials["outcome"].astype(str).str.startswith(("finished", "stopped early")), "trial"]
    if OBJECTIVE not in cycles:
        return cycles.iloc[0:0]
    kept = cycles[cycles["trial"].isin(ended) & (cycles["cycle"] >= 1) & cycles[OBJECTIVE].notna()]
    return with_info_max_ratio(kept.sort_values(["trial", "cycle"], kind="stable"))


def with_info_max_ratio(cycles: pd.DataFrame) -> pd.DataFrame:
    """IM / log K for trials logged before the ratio was: K, the classes of the classifier IM read, is the cycle's
    ULA class count (fine-tuning rebuilds the classifier from its templates; a degenerate cycle, which keeps the
    previous classifier, gets none)."""
    if "info_max_ratio" in cycles or not {"info_max", "ula_num_classes", "ula_degenerate"} <= set(cycles):
        return cycles
    classes = cycles["ula_num_classes"].where((cycles["ula_num_classes"] >= 2) & (cycles["ula_degenerate"] != 1))
    return cycles.assign(info_max_ratio=cycles["info_max"] / np.log(classes))


def oriented(frame: pd.DataFrame, name: str) -> np.ndarray:
    """The metric's values turned so that higher is better (the registry declares each one's direction)."""
    return (1.0 if metric(name).better == HIGHER else -1.0) * frame[name].to_numpy(float)


def rank_weights(score: np.ndarray) -> np.ndarray:
    ranks = rankdata(score, method="dense")
    return (ranks / ranks.max()) ** WEIGHT_POWER


def weighted_spearman(score: np.ndarray, truth: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Pearson correlation of the two rankings (average ranks for ties), each trial weighted; NaN when either
    ranking is constant or there are fewer than 3 trials."""
    weights = rank_weights(score) if weights is None else weights
    ranks = np.vstack([rankdata(score), rankdata(truth)])
    if len(score) < 3 or np.ptp(ranks, axis=1).min() == 0:
        return float("nan")
    cov = np.cov(ranks, aweights=weights)
    return float(cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]))


def spearman(score: np.ndarray, truth: np.ndarray) -> float:
    return weighted_spearman(score, truth, np.ones(len(score)))


def regret(score: np.ndarray, truth: np.ndarray) -> float:
    """Target mAP of the trial the validator ranks first (the first of a tie) minus the best trial's."""
    return float(truth[np.argmax(score)] - truth.max())


def checkpoint_gains(cycles: pd.DataFrame, name: str) -> np.ndarray:
    """Per trial that measured the validator: target mAP of the cycle it ranks first minus the last cycle's."""
    gains = []
    for _, history in cycles.groupby("trial", sort=False):
        measured = history[history[name].notna()]
        if not measured.empty:
            picked = measured[OBJECTIVE].iloc[int(np.argmax(oriented(measured, name)))]
            gains.append(picked - history[OBJECTIVE].iloc[-1])
    return np.array(gains, dtype=float)


def _mean(values: Sequence[float]) -> float:
    finite = [value for value in values if np.isfinite(value)]
    return float(np.mean(finite)) if finite else float("nan")


def bootstrap(samples: list[tuple[np.ndarray, ...]], statistic: Callable[..., float], seed: int,
              resamples: int) -> Interval:
    """The statistic of each study's arrays averaged over studies, with the percentile interval of the same over
    resamples (with replacement) of each study's entries; one seed, so that every statistic sees the same draws."""
    if not samples:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        picks = [rng.integers(0, len(arrays[0]), len(arrays[0])) for arrays in samples]
        draws.append(_mean([statistic(*(a[p] for a in arrays)) for arrays, p in zip(samples, picks, strict=True)]))
    finite = np.array([draw for draw in draws if np.isfinite(draw)])
    low, high = np.percentile(finite, [2.5, 97.5]) if finite.size else (float("nan"), float("nan"))
    return _mean([statistic(*arrays) for arrays in samples]), float(low), float(high)


def validator_row(name: str, chosen: dict[str, pd.DataFrame], resamples: int, seed: int) -> dict:
    """One validator's statistics over the groups (``chosen``: study and direction -> its chosen cycles)."""
    finals = {study: cycles.groupby("trial").tail(1).dropna(subset=[name]) for study, cycles in chosen.items()
              if name in cycles}
    pairs = {study: (oriented(final, name), final[OBJECTIVE].to_numpy(float)) for study, final in finals.items()
             if len(final) >= 3}
    gains = [(g,) for g in (checkpoint_gains(cycles, name) for cycles in chosen.values() if name in cycles) if g.size]
    return {
        "validator": name, "trials": sum(len(score) for score, _ in pairs.values()),
        "spearman": bootstrap(list(pairs.values()), spearman, seed, resamples),
        "weighted_spearman": bootstrap(list(pairs.values()), weighted_spearman, seed, resamples),
        "regret": _mean([regret(*pair) for pair in pairs.values()]),
        "checkpoint_gain": bootstrap(gains, lambda g: float(np.mean(g)), seed, resamples),
        "per_study": {study: (spearman(*pair), regret(*pair)) for study, pair in pairs.items()},
    }


def benchmark(studies: Sequence[LoadedStudy], resamples: int = RESAMPLES, seed: int = 0) -> list[dict]:
    """A row per validator any of the studies measured, then the oracle's (OBJECTIVE, the target test mAP itself:
    the ceiling every validator is measured against)."""
    chosen = groups(studies)
    names = [name for name in CANDIDATES if any(name in cycles for cycles in chosen.values())]
    return [validator_row(name, chosen, resamples, seed) for name in (*names, OBJECTIVE)]


def groups(studies: Sequence[LoadedStudy]) -> dict[str, pd.DataFrame]:
    """Each study's chosen cycles, split by direction: 'study D->M' -> its frame."""
    chosen = {}
    for study in studies:
        cycles = chosen_cycles(study)
        column = cycles["trial"].map(study.trials.set_index("trial")["column"]).fillna("?")
        chosen.update({f"{study.name} {label}": part for label, part in cycles.groupby(column, sort=True)})
    return chosen


def trials_with_validators(study: LoadedStudy) -> int:
    cycles = chosen_cycles(study)
    present = [name for name in VALIDATOR_KEYS if name in cycles]
    return int(cycles.groupby("trial").tail(1)[present].notna().any(axis=1).sum()) if present else 0


def _interval(values: Interval, fmt: str) -> str:
    value, low, high = values
    if not np.isfinite(value):
        return MISSING
    return f"{value:{fmt}} [{low:{fmt}}, {high:{fmt}}]" if np.isfinite(low) else f"{value:{fmt}}"


def _number(value: float, fmt: str) -> str:
    return f"{value:{fmt}}" if np.isfinite(value) else MISSING


def row_cells(row: dict) -> list[str]:
    entry = metric(row["validator"])
    oracle = row["validator"] == OBJECTIVE
    name = f"`{entry.name}` ({'oracle: the test mAP itself' if oracle else entry.label})"
    return [name, entry.target_labels, entry.better, str(row["trials"]), _interval(row["spearman"], ".2f"),
            _interval(row["weighted_spearman"], ".2f"), _number(row["regret"], "+.1f"),
            _interval(row["checkpoint_gain"], "+.1f")]


def _study_cell(row: dict, study: str) -> str:
    if study not in row["per_study"]:
        return MISSING
    rho, lost = row["per_study"][study]
    return f"{_number(rho, '.2f')} / {_number(lost, '+.1f')}"


def benchmark_lines(studies: Sequence[LoadedStudy], resamples: int = RESAMPLES, seed: int = 0) -> list[str]:
    """The benchmark as Markdown: what it reads, which studies, the table, and the per-study breakdown folded."""
    rows = benchmark(studies, resamples, seed)
    names = list(dict.fromkeys(group for row in rows for group in row["per_study"]))
    covered = "; ".join(f"`{s.name}` ({len(chosen_cycles(s)['trial'].unique())} trials, "
                        f"{', '.join(sorted(s.trials['direction'].dropna().unique())) or 'direction not logged'})"
                        for s in studies)
    header = ["validator", "reads target labels", "better", "trials", "Spearman [95%]", "weighted Spearman [95%]",
              "selection regret (mAP)", "checkpoint: mAP over the last cycle [95%]"]
    return [
        "Computed **with target labels**, on purpose: it measures each validator against the oracle (the final "
        "target test mAP). Choose a validator here on studies other than the one it will then search.",
        "", f"Studies: {covered}.", "",
        f"Each trial's last cycle; statistics per study and direction, averaged over them (pooling directions "
        f"would reward telling them apart); intervals: {resamples} bootstrap resamples of trials within each "
        f"(seed {seed}). Weighted Spearman: Musgrave et al. (2022), each "
        f"trial weighted by its rank under the validator (dense, / highest) to the power {WEIGHT_POWER}. Regret: "
        "the picked trial's target mAP minus the best's. Checkpoint: within each trial, the cycle the validator "
        "ranks first against the last cycle (study/report/validators.py).",
        "", markdown_table(header, [row_cells(row) for row in rows]), "",
        "<details><summary>per study and direction: Spearman / selection regret</summary>", "",
        markdown_table(["validator", *(f"`{name}`" for name in names)],
                       [[f"`{row['validator']}`", *(_study_cell(row, name) for name in names)] for row in rows]),
        "", "</details>"]

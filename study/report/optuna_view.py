"""The study's trials as an in-memory Optuna study, so that Optuna computes the fANOVA importances and the
Pareto front and draws their plots: from the search's Optuna storage where there is one, else from the MLflow
runs (a grid has no Optuna study). Trials carry their MLflow name as the user attribute ``trial``."""

from __future__ import annotations

import json
import warnings

import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.importance import FanovaImportanceEvaluator, get_param_importances
from optuna.trial import FrozenTrial, TrialState, create_trial

from study.report.load import OBJECTIVE, param_value


def varying_params(trials: pd.DataFrame) -> list[str]:
    columns = [c for c in trials.columns if c.startswith("params.")]
    return [c for c in columns if trials[c].dropna().nunique() > 1]


def _distribution(values: list):
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return IntDistribution(min(values), max(values))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return FloatDistribution(float(min(values)), float(max(values)))
    return CategoricalDistribution(sorted({json.dumps(v) for v in values}))


def _study(directions: list, metrics: list[str], trials: list[FrozenTrial]) -> optuna.Study:
    study = optuna.create_study(directions=directions)
    with warnings.catch_warnings():  # metric names label Optuna's plots; the call is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(metrics)
    study.add_trials(trials)
    return study


def frame_study(frame: pd.DataFrame, objectives: list[dict], params: list[str] = (),
                finished: pd.Series | None = None) -> optuna.Study:
    """One trial per row: the objectives' columns as values, ``params.*`` columns as params (lists and text as
    categories); a row whose ``finished`` is False is a pruned trial (no value)."""
    parsed = {p.removeprefix("params."): [param_value(v) for v in frame[p]] for p in params}
    distributions = {name: _distribution(values) for name, values in parsed.items()}
    trials = []
    for index, (_, row) in enumerate(frame.iterrows()):
        complete = finished is None or bool(finished.iloc[index])
        trials.append(create_trial(
            state=TrialState.COMPLETE if complete else TrialState.PRUNED,
            values=[float(row[o["metric"]]) for o in objectives] if complete else None,
            params={name: json.dumps(values[index]) if isinstance(distributions[name], CategoricalDistribution)
                    else values[index] for name, values in parsed.items()},
            distributions=distributions, user_attrs={"trial": row["trial"]}))
    return _study(["maximize" if o["mode"] == "max" else "minimize" for o in objectives],
                  [o["metric"] for o in objectives], trials)


def importance_study(trials: pd.DataFrame, study_name: str, storage: str | None,
                     metrics: list[str]) -> optuna.Study | None:
    """What fANOVA reads: the storage's complete trials and objectives, else the runs' final-cycle target mAP
    over the params that vary; kept to the objectives whose values vary (fANOVA needs variance), None if none."""
    if storage:
        if study_name not in optuna.study.get_all_study_names(storage):
            raise ValueError(f"Optuna storage {storage} has no study {study_name!r}; omit the storage to compute "
                             "importances from the MLflow runs")
        stored = optuna.load_study(study_name=study_name, storage=storage)
        directions, source = stored.directions, stored.get_trials(states=(TrialState.COMPLETE,))
    else:
        done = trials[(trials["cycles"] > 0) & trials[f"final_{OBJECTIVE}"].notna()]
        if not varying_params(done):
            return None
        metrics = [OBJECTIVE]
        frame = done.rename(columns={f"final_{OBJECTIVE}": OBJECTIVE})
        directions, source = ["maximize"], frame_study(frame, [{"metric": OBJECTIVE, "mode": "max"}],
                                                       varying_params(done)).trials
    keep = [i for i in range(len(metrics)) if len({t.values[i] for t in source}) > 1]
    if len(source) < 2 or not keep:
        return None
    return _study([directions[i] for i in keep], [metrics[i] for i in keep],
                  [create_trial(params=t.params, distributions=t.distributions, values=[t.values[i] for i in keep])
                   for t in source])


def importances(study: optuna.Study) -> dict[str, dict[str, float]]:
    """Objective -> fANOVA importances (seed 0) of each param."""
    return {name: get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0),
                                        target=lambda trial, i=index: trial.values[i])
            for index, name in enumerate(study.metric_names)}


def pareto_front(frame: pd.DataFrame, objectives: list[dict]) -> tuple[pd.DataFrame, optuna.Study]:
    """The rows no other row beats in every objective (and strictly in one), by Optuna's ``best_trials``, and
    the study of the rows with every objective measured."""
    study = frame_study(frame.dropna(subset=[o["metric"] for o in objectives]), objectives)
    front = frame[frame["trial"].isin({t.user_attrs["trial"] for t in study.best_trials})]
    return front.sort_values(objectives[0]["metric"], ascending=objectives[0]["mode"] != "max"), study


def history_study(trials: pd.DataFrame) -> optuna.Study:
    """A search's trials in start order by final-cycle target mAP; a trial stopped early is pruned, so the best
    value so far is that of the trials that finished."""
    done = trials[trials["cycles"] > 0].rename(columns={f"final_{OBJECTIVE}": OBJECTIVE})
    return frame_study(done, [{"metric": OBJECTIVE, "mode": "max"}], finished=done["outcome"] == "finished")

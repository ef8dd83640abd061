"""A study read back from MLflow: its latest parent run, its trial runs as ``mlflow.search_runs``' frame, and
from them one row per trial and one row per (trial, cycle)."""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from reidmodel.checkpoint import CYCLES
from study import tables
from study.spaces import table_column
from study.tables import Table, parse_tables
from study.tracking import TAG_PARENT, TAG_TRIAL, find_experiment_id, latest_parent, logged_space

OBJECTIVE = "target_mAP"


def load_runs(client: MlflowClient, study_name: str, tracking_uri: str) -> tuple[Any, pd.DataFrame]:
    """The latest parent run (a Run: publish_report and the header read its status and tags) and the frame of
    its trial runs, one search each."""
    experiment_id = find_experiment_id(client, study_name, tracking_uri, create=False)
    parent = latest_parent(client, experiment_id)
    if parent is None:
        raise ValueError(f"study {study_name!r} has no parent run at {tracking_uri}; run it with study.run first")
    mlflow.set_tracking_uri(tracking_uri)  # mlflow.search_runs reads the process's tracking URI
    children = mlflow.search_runs(experiment_ids=[experiment_id], output_format="pandas",
                                  filter_string=f"tags.`{TAG_PARENT}` = '{parent.info.run_id}'",
                                  order_by=["attributes.start_time ASC"])
    if children.empty:
        raise ValueError(f"study {study_name!r} has no trial runs under parent run {parent.info.run_id}; "
                         "no trial has started yet")
    return parent, children.reset_index(drop=True)


def cycle_frame(children: pd.DataFrame) -> pd.DataFrame:
    """One row per (trial, cycle), read from each trial's ``cycles.csv`` artifact: one download per trial
    however many metrics it logged. A column no cycle measured is dropped, as MLflow holds no NaN metric."""
    frames = []
    with tempfile.TemporaryDirectory() as folder:
        for index, (name, root) in enumerate(zip(children[f"tags.{TAG_TRIAL}"], children["artifact_uri"], strict=True)):
            try:
                path = mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/{CYCLES}", dst_path=f"{folder}/{index}")
            except MlflowException:  # a trial that failed before its first cycle
                continue
            frames.append(pd.read_csv(path).assign(trial=name))
    if not frames:
        return pd.DataFrame(columns=["trial", "cycle"])
    frame = pd.concat(frames, ignore_index=True).dropna(axis=1, how="all")
    frame = frame[["trial", "cycle", *sorted(set(frame.columns) - {"trial", "cycle"})]]
    return frame.sort_values(["trial", "cycle"], kind="stable").reset_index(drop=True)


def cycle_summary(cycles: pd.DataFrame) -> pd.DataFrame:
    """Per trial that measured target mAP: its cycle count, and the target metrics of its final cycle and of
    its best cycle by target mAP."""
    if OBJECTIVE not in cycles:
        return pd.DataFrame({"trial": pd.Series(dtype=object), "cycles": pd.Series(dtype=int)})
    measured = cycles[cycles.groupby("trial")[OBJECTIVE].transform(lambda values: values.notna().any())]
    groups = measured.groupby("trial", sort=False)
    final, best = groups.tail(1).set_index("trial"), measured.loc[groups[OBJECTIVE].idxmax()].set_index("trial")
    summary = pd.DataFrame({"cycles": groups.size(), "final_cycle": final["cycle"].astype(int),
                            "best_cycle": best["cycle"].astype(int)})
    for key in (f"target_{rank}" for rank in tables.METRICS):
        summary[f"final_{key}"] = final.get(key, math.nan)
        summary[f"best_{key}"] = best.get(key, math.nan)
    summary["final_source_mAP"] = final.get("source_mAP", math.nan)
    return summary.rename_axis("trial").reset_index()


def tags(children: pd.DataFrame, key: str) -> pd.Series:
    """One tag of every run; missing (NaN or None) where a run lacks it."""
    return children.get(f"tags.{key}", pd.Series(None, index=children.index, dtype=object))


def outcomes(children: pd.DataFrame) -> pd.Series:
    """finished, stopped early (by whom, at which cycle), failed, or still running / killed."""
    reason = tags(children, "stop_reason").replace("", math.nan)
    stopped = (children["status"] == "KILLED") & reason.notna()
    return children["status"].str.lower().where(~stopped, "stopped early (" + reason.astype(str) + ")")


def trial_frame(children: pd.DataFrame, cycles: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: tags, final-cycle and best-cycle target metrics, params as ``params.<key>``."""
    seeds = tags(children, "seed").replace("", math.nan).fillna(children.get("params.runtime.seed", math.nan))
    directions = tags(children, "direction")
    frame = pd.DataFrame({
        "trial": children[f"tags.{TAG_TRIAL}"], "run_id": children["run_id"], "status": children["status"],
        "seed": pd.to_numeric(seeds), "outcome": outcomes(children),
        "trial_id": children.get("tags.trial_id"), "variant": children.get("tags.variant"), "direction": directions,
        "machine": tags(children, "machine"),
        "column": [table_column(d) if isinstance(d, str) else None for d in directions]})
    frame = frame.merge(cycle_summary(cycles), on="trial", how="left")
    frame["cycles"] = frame["cycles"].fillna(0).astype(int)
    return pd.concat([frame, children[sorted(c for c in children if c.startswith("params."))]], axis=1)


def final_values(cycles: pd.DataFrame, trials: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """The last cycle's value of each metric for every trial that finished all its cycles."""
    finished = trials[trials["outcome"] == "finished"]["trial"]
    last = cycles[cycles["trial"].isin(finished)].groupby("trial").tail(1)
    return last[["trial", *metrics]].merge(trials, on="trial")


def param_value(text):
    """A logged param's value: MLflow keeps params as text, JSON where it parses (numbers, lists)."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


@dataclass(frozen=True)
class LoadedStudy:
    """What a report is built from: the study's runs as MLflow holds them, its space and the frames."""

    name: str
    tracking_uri: str
    client: MlflowClient
    parent: Any
    children: pd.DataFrame
    space: dict
    cycles: pd.DataFrame
    trials: pd.DataFrame

    @classmethod
    def load(cls, study_name: str, tracking_uri: str) -> LoadedStudy:
        client = MlflowClient(tracking_uri)
        parent, children = load_runs(client, study_name, tracking_uri)
        cycles = cycle_frame(children)
        return cls(study_name, tracking_uri, client, parent, children, logged_space(client, parent), cycles,
                   trial_frame(children, cycles))

    def tables(self) -> list[Table]:
        """The tables the space declares, checked against its variants."""
        return parse_tables(self.space.get("tables"), [v["name"] for v in self.space.get("variants", [])])

    @property
    def objectives(self) -> list[dict]:
        return self.space.get("search", {}).get("objectives") or []

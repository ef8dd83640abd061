"""The Markdown report of a study, rebuilt from MLflow alone: the paper's tables beside ours, CSVs, plots.

A trial's metric is shown two ways, always labelled: its final cycle (what the method delivers without a
target-domain oracle) and its best cycle by target mAP (what early stopping with labels would give; the
paper's Fig. 6 shows mAP falling after a peak). Several trials of one table cell (seeds) are averaged and
their count is shown. The best-trials table and parameter importances are written for any study with
finished cycles (for an ablation grid they rank the variants). Plots use matplotlib's object-oriented
Figure (Agg canvas): no pyplot backend switch, no global figure state.

    python -m study.report --study NAME [--results-dir DIR] [--tracking-uri URI] [--optuna-storage URI]
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from mlflow import MlflowClient

from reidmodel.config import list_text
from reidmodel.cycle_metrics import MISSING, metric
from study import tables
from study.paths import default_tracking_uri
from study.spaces import table_column
from study.tables import Table, parse_tables
from study.tracking import (
    HISTORY_PREFIX,
    TAG_PARENT,
    TAG_ROLE,
    TAG_TRIAL,
    find_experiment_id,
)

OBJECTIVE = "target_mAP"
# The per-trial ULA diagnostics table, in column order; headers and cells from reidmodel.cycle_metrics.
ULA_TABLE = ("ula_num_clusters", "ula_requested_classes", "ula_num_classes", "ula_num_labelled",
             "ula_labelled_fraction", "ula_precision", "ula_recall", "ula_degenerate", "target_mAP")


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt(value, digits: int = 1) -> str:
    """A number that is not a cycle metric (an importance)."""
    return MISSING if _missing(value) else f"{value:.{digits}f}"


def cell(name: str, value) -> str:
    """A cycle metric's value as the registry formats it (reidmodel.cycle_metrics)."""
    return MISSING if _missing(value) else metric(name).format(value)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    return tables.markdown_frame(pd.DataFrame(rows, columns=header))


# ---------------------------------------------------------------- reading MLflow

def load_runs(client: MlflowClient, study_name: str, tracking_uri: str):
    """The latest parent run of the study and its child runs."""
    experiment_id = find_experiment_id(client, study_name, tracking_uri, create=False)
    parents = client.search_runs([experiment_id], filter_string=f"tags.`{TAG_ROLE}` = 'parent'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        raise ValueError(f"study {study_name!r} has no parent run at {tracking_uri}; run it with study.run first")
    parent = parents[0]
    children, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{parent.info.run_id}'",
                                  order_by=["attributes.start_time ASC"], page_token=token)
        children += list(page)
        token = page.token
        if not token:
            break
    if not children:
        raise ValueError(f"study {study_name!r} has no trial runs under parent run {parent.info.run_id}; "
                         "no trial has started yet")
    return parent, children


def load_space_dict(client: MlflowClient, parent) -> dict:
    """The space the study ran (its tables, objectives, start points), as logged on the parent run."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = client.download_artifacts(parent.info.run_id, "search_space.json", folder)
        except Exception:  # a parent run from before spaces were logged: no declared tables
            return {}
        return json.loads(Path(path).read_text())


def cycle_frame(client: MlflowClient, children) -> pd.DataFrame:
    """One row per (trial, cycle); a step logged twice (a restarted trial) keeps its latest value."""
    records = []
    for run in children:
        values: dict[int, dict] = {}
        for key in sorted(run.data.metrics):
            if key.startswith(HISTORY_PREFIX):
                continue
            for point in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.timestamp):
                values.setdefault(point.step, {})[key] = point.value
        for step, metrics in values.items():
            records.append({**metrics, "trial": trial_name(run), "cycle": step})
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        return pd.DataFrame(columns=["trial", "cycle"])
    return frame.sort_values(["trial", "cycle"], kind="stable").reset_index(drop=True)


def trial_name(run) -> str:
    return run.data.tags.get(TAG_TRIAL, run.info.run_name)


def outcome(run) -> str:
    """finished, stopped early (by whom, at which cycle), failed, or still running / killed."""
    status = run.info.status
    if status == "FINISHED":
        return "finished"
    if status == "FAILED":
        return "failed"
    reason = run.data.tags.get("stop_reason")
    if status == "KILLED" and reason:
        return f"stopped early ({reason})"
    return status.lower()


def trial_frame(children, cycles: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: tags, final-cycle and best-cycle target metrics, params as ``params.<key>``."""
    records = []
    for run in children:
        name = trial_name(run)
        direction = run.data.tags.get("direction")
        seed = run.data.tags.get("seed") or run.data.params.get("runtime.seed")
        record = {"trial": name, "run_id": run.info.run_id, "status": run.info.status,
                  "seed": int(seed) if seed not in (None, "") else None,
                  "outcome": outcome(run), "trial_id": run.data.tags.get("trial_id"), "variant": run.data.tags.get("variant"), "direction": direction,
                  "column": table_column(direction), "cycles": 0}
        history = cycles[cycles["trial"] == name]
        if OBJECTIVE in history and history[OBJECTIVE].notna().any():
            final = history.iloc[-1]
            best = history.loc[history[OBJECTIVE].idxmax()]
            record.update(cycles=len(history), final_cycle=int(final["cycle"]), best_cycle=int(best["cycle"]))
            for rank in tables.METRICS:
                key = f"target_{rank}"
                record[f"final_{key}"] = final.get(key, math.nan)
                record[f"best_{key}"] = best.get(key, math.nan)
            record["final_source_mAP"] = final.get("source_mAP", math.nan)
        record.update({f"params.{k}": v for k, v in sorted(run.data.params.items())})
        records.append(record)
    return pd.DataFrame.from_records(records)


# ---------------------------------------------------------------- tables

def varying_params(trials: pd.DataFrame) -> list[str]:
    columns = [c for c in trials.columns if c.startswith("params.")]
    return [c for c in columns if trials[c].dropna().nunique() > 1]


def best_trials_markdown(trials: pd.DataFrame, limit: int = 10) -> str:
    """final = the last cycle the trial reached (a trial the scheduler stopped early ends there)."""
    ranked = trials[trials["cycles"] > 0].sort_values(f"final_{OBJECTIVE}", ascending=False).head(limit)
    params = varying_params(trials)
    with_variant = ranked["variant"].notna().any()
    header = ["trial"] + (["variant"] if with_variant else []) + [
        "direction", "outcome", "final cycle", "final mAP", "final R1", "best mAP (cycle)"] + [
        p.removeprefix("params.") for p in params]
    rows = []
    for _, row in ranked.iterrows():
        rows.append([row["trial"]] + ([str(row["variant"])] if with_variant else []) + [
            str(row["direction"]), row["outcome"], str(row["final_cycle"]), cell(OBJECTIVE, row[f"final_{OBJECTIVE}"]),
            cell("target_R1", row["final_target_R1"]), f"{cell(OBJECTIVE, row[f'best_{OBJECTIVE}'])} ({row['best_cycle']})"]
            + [significant(_parse(row[p])) for p in params])
    return markdown_table(header, rows)


def significant(value, digits: int = 4) -> str:
    """Sampled values to ``digits`` significant digits; lists (attention stages) joined with '+'."""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, list):
        return list_text(value) or "none"
    return str(value)


def k_binding_markdown(table: Table, cycles: pd.DataFrame, trials: pd.DataFrame) -> list[str]:
    """Per ULA row and cycle: DBSCAN's clusters (min-max over seeds) against K, pseudo-label precision, and
    in words whether the cap of K base classes bound (more clusters than K) in every cycle."""
    if "ula_requested_classes" not in cycles:
        return ["K was not logged by this study's trials (older runs): no evidence either way."]
    rows, summary = [], []
    merged = cycles.merge(trials[["trial", "variant", "column"]], on="trial")
    merged = merged[merged["ula_requested_classes"].notna() & (merged["cycle"] > 0)]
    for row in table.rows:
        for column in tables.columns_of(trials):
            runs = merged[(merged["variant"] == row.variant) & (merged["column"] == column)]
            if runs.empty:
                continue
            bound = runs["ula_num_clusters"] > runs["ula_requested_classes"]
            summary.append(f"- {row.label}, {column}: K bound in {int(bound.sum())} of {len(runs)} cycles "
                           f"({runs['trial'].nunique()} trials)"
                           + ("" if bound.all() else " — **K did not bind in every cycle**"))
            for cycle, group in runs.groupby("cycle"):
                clusters, requested = group["ula_num_clusters"], group["ula_requested_classes"]
                rows.append([row.label, column, str(int(cycle)),
                             f"{cell('ula_num_clusters', clusters.min())}-{cell('ula_num_clusters', clusters.max())}",
                             "/".join(cell("ula_requested_classes", k) for k in sorted(requested.unique())),
                             cell("ula_precision", group["ula_precision"].mean()),
                             f"{int((clusters > requested).sum())}/{len(group)}"])
    if not rows:
        return ["No ULA cycles in this table's rows."]
    detail = markdown_table(["row", "direction", "cycle", "DBSCAN clusters (min-max)", "K",
                             "pseudo-label precision (mean)", "trials where K bound"], rows)
    return summary + ["", "<details><summary>per cycle</summary>", "", detail, "", "</details>"]


def final_values(cycles: pd.DataFrame, trials: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """The last cycle's value of each metric for every trial that finished all its cycles."""
    finished = trials[trials["outcome"] == "finished"]["trial"]
    last = cycles[cycles["trial"].isin(finished)].groupby("trial").tail(1)
    return last[["trial", *metrics]].merge(trials, on="trial")


def pareto_front(frame: pd.DataFrame, objectives: list[dict]) -> pd.DataFrame:
    """The trials no other trial beats in every objective (and strictly in one)."""
    signs = np.array([1.0 if o["mode"] == "max" else -1.0 for o in objectives])
    values = frame[[o["metric"] for o in objectives]].to_numpy(dtype=float) * signs
    keep = [np.isfinite(point).all() and not ((values >= point).all(axis=1) & (values > point).any(axis=1)).any()
            for point in values]
    return frame[keep].sort_values(objectives[0]["metric"], ascending=objectives[0]["mode"] != "max")


def start_point_trials(frame: pd.DataFrame, start_points: list[dict]) -> dict[str, str]:
    """Trial name -> start-point name, for the trials that evaluated a space's ``search.start_points``."""
    found = {}
    for point in start_points:
        for _, row in frame.iterrows():
            if all(_same(row.get(f"params.{key}"), value) for key, value in point["params"].items()):
                found[row["trial"]] = point["name"]
    return found


def _same(logged, value) -> bool:
    parsed = _parse(logged)
    if isinstance(value, list):
        return parsed == list_text(value) or parsed == value
    if isinstance(value, (int, float)) and isinstance(parsed, (int, float)):
        return math.isclose(float(parsed), float(value), rel_tol=1e-9)
    return parsed == value


def plot_front(frame: pd.DataFrame, front: pd.DataFrame, objectives: list[dict], marked: dict[str, str],
               path: Path) -> None:
    x, y = (o["metric"] for o in objectives[:2])
    figure = Figure(figsize=(7, 5.5), layout="tight")
    axis = figure.subplots()
    axis.scatter(frame[x], frame[y], s=18, color="0.6", label="finished trials")
    ordered = front.sort_values(x)
    axis.plot(ordered[x], ordered[y], marker="o", color="tab:red", label="Pareto front")
    for name, label in marked.items():
        row = frame[frame["trial"] == name].iloc[0]
        axis.scatter([row[x]], [row[y]], marker="*", s=220, color="tab:blue", zorder=5, label=label)
    axis.set_xlabel(f"{x} (final cycle, %)")
    axis.set_ylabel(f"{y} (final cycle, %)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.savefig(path, dpi=110)


def front_markdown(front: pd.DataFrame, objectives: list[dict], marked: dict[str, str], params: list[str]) -> str:
    header = ["trial", *(o["metric"] for o in objectives), *(p.removeprefix("params.") for p in params)]
    rows = [[row["trial"] + (f" ({marked[row['trial']]})" if row["trial"] in marked else "")]
            + [cell(o["metric"], row[o["metric"]]) for o in objectives] + [significant(_parse(row[p])) for p in params]
            for _, row in front.iterrows()]
    return markdown_table(header, rows)


# ---------------------------------------------------------------- parameter importances

def _parse(value: str):
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def _distribution(values: list):
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return optuna.distributions.IntDistribution(min(values), max(values))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return optuna.distributions.FloatDistribution(float(min(values)), float(max(values)))
    return optuna.distributions.CategoricalDistribution(sorted({json.dumps(v) for v in values}))


def importances_from_trials(trials: pd.DataFrame) -> dict[str, float]:
    """fANOVA importances of the params that vary, for the final-cycle target mAP, via an in-memory study."""
    done = trials[(trials["cycles"] > 0) & trials[f"final_{OBJECTIVE}"].notna()]
    params = varying_params(done)
    # fANOVA needs the objective to vary; equal values (e.g. identical trials) have no importances.
    if len(done) < 2 or not params or done[f"final_{OBJECTIVE}"].nunique() < 2:
        return {}
    parsed = {p: [_parse(v) for v in done[p]] for p in params}
    distributions = {p.removeprefix("params."): _distribution(values) for p, values in parsed.items()}
    study = optuna.create_study(direction="maximize")
    for index, value in enumerate(done[f"final_{OBJECTIVE}"]):
        trial_params = {}
        for p, values in parsed.items():
            name = p.removeprefix("params.")
            raw = values[index]
            categorical = isinstance(distributions[name], optuna.distributions.CategoricalDistribution)
            trial_params[name] = json.dumps(raw) if categorical else raw
        study.add_trial(optuna.trial.create_trial(params=trial_params, distributions=distributions,
                                                  value=float(value)))
    return optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))


def importances_from_optuna(study_name: str, storage: str, objectives: list[str]) -> dict[str, dict[str, float]]:
    """objective -> fANOVA importances; a multi-objective study gets one set per objective."""
    if study_name not in optuna.study.get_all_study_names(storage):
        raise ValueError(f"Optuna storage {storage} has no study {study_name!r}; omit the storage to compute "
                         "importances from the MLflow runs")
    study = optuna.load_study(study_name=study_name, storage=storage)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    out = {}
    for index, objective in enumerate(objectives):
        if len(complete) < 2 or len({t.values[index] for t in complete}) < 2:
            continue
        target = (lambda t, i=index: t.values[i]) if len(objectives) > 1 else None
        out[objective] = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), target=target)
    return out


# ---------------------------------------------------------------- plots

def _label(trials: pd.DataFrame, name: str) -> str:
    row = trials[trials["trial"] == name].iloc[0]
    return f"{row['variant']} ({name})" if isinstance(row["variant"], str) else name


def plot_cycles(cycles: pd.DataFrame, trials: pd.DataFrame, keys: dict[str, str], path: Path) -> None:
    """One row of panels per metric, one column per table direction, one line per trial."""
    columns = [c for c in tables.COLUMNS if (trials["column"] == c).any()] or [None]
    figure = Figure(figsize=(8 * len(columns), 4 * len(keys)), layout="tight")
    axes = figure.subplots(len(keys), len(columns), squeeze=False)
    for row, (key, ylabel) in enumerate(keys.items()):
        for axis, column in zip(axes[row], columns, strict=True):
            names = trials["trial"] if column is None else trials.loc[trials["column"] == column, "trial"]
            colours = colormaps["tab10" if len(names) <= 10 else "tab20"]
            for index, name in enumerate(names):
                history = cycles[cycles["trial"] == name]
                if key in history and history[key].notna().any():
                    axis.plot(history["cycle"], history[key], marker="o", markersize=3,
                              color=colours(index % colours.N), label=_label(trials, name))
            axis.set_title(column or "all trials")
            axis.set_xlabel("cycle (0 = source-only model)")
            axis.set_ylabel(ylabel)
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            axis.grid(alpha=0.3)
            if axis.lines and len(axis.lines) <= 20:  # beside the panel, so no line is hidden
                axis.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.savefig(path, dpi=110)


def running_best(values: pd.Series, finished: pd.Series) -> pd.Series:
    """The best value among the finished trials so far, carried across the trials stopped early."""
    return values.where(finished).cummax().ffill()


def plot_history(trials: pd.DataFrame, path: Path) -> None:
    """A search's course: each trial's final target mAP in start order (hollow: stopped early) and the best
    value of the finished trials so far."""
    done = trials[trials["cycles"] > 0].reset_index(drop=True)
    finished = done["outcome"] == "finished"
    figure = Figure(figsize=(8, 4.5), layout="tight")
    axis = figure.subplots()
    number = done.index + 1
    axis.scatter(number[finished], done.loc[finished, f"final_{OBJECTIVE}"], color="tab:blue", s=22,
                 label="finished trial (final cycle)")
    axis.scatter(number[~finished], done.loc[~finished, f"final_{OBJECTIVE}"], facecolors="none",
                 edgecolors="tab:gray", s=22, label="stopped early (last cycle reached)")
    axis.step(number, running_best(done[f"final_{OBJECTIVE}"], finished), where="post", color="tab:red",
              label="best finished so far")
    axis.set_xlabel("trial (start order)")
    axis.set_ylabel("target mAP (%)")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.savefig(path, dpi=110)


def plot_importances(importances: dict[str, dict[str, float]], path: Path) -> None:
    """One panel per objective."""
    figure = Figure(figsize=(7 * len(importances), 0.4 * max(map(len, importances.values())) + 1.5),
                    layout="tight")
    for axis, (objective, values) in zip(figure.subplots(1, len(importances), squeeze=False)[0],
                                         importances.items(), strict=True):
        names = list(values)[::-1]
        axis.barh(names, [values[n] for n in names])
        axis.set_xlabel(f"fANOVA importance for {objective}")
    figure.savefig(path, dpi=110)


# ---------------------------------------------------------------- the report

def machine_line() -> str:
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, torch {torch_version}"


def regenerate_command(study_name: str, results_dir: Path, tracking_uri: str, optuna_storage: str | None) -> str:
    try:
        shown_dir = results_dir.relative_to(Path.cwd().resolve())
    except ValueError:
        shown_dir = results_dir
    words = ["python", "-m", "study.report", "--study", study_name, "--results-dir", str(shown_dir)]
    if tracking_uri != default_tracking_uri(results_dir):
        words += ["--tracking-uri", tracking_uri]
    if optuna_storage:
        words += ["--optuna-storage", optuna_storage]
    return shlex.join(words)


def ula_markdown(cycles: pd.DataFrame, trials: pd.DataFrame) -> str:
    """Collapsible per-trial tables, so a search with many trials keeps the report readable."""
    blocks = []
    for name, history in cycles.groupby("trial", sort=True):
        keys = [k for k in ULA_TABLE if k in history]
        rows = [[cell("cycle", row["cycle"])] + [cell(k, row[k]) for k in keys] for _, row in history.iterrows()]
        table = markdown_table([metric("cycle").label] + [metric(k).label for k in keys], rows)
        blocks.append(f"<details><summary>{_label(trials, name)}</summary>\n\n{table}\n\n</details>")
    return "\n\n".join(blocks)


def cost_line(client: MlflowClient, parent, children) -> str:
    """What the study cost, and how much of it the pre-training cache saved. Each sitting of a resumed study
    logs its own wall time, so the cost is their sum (a sitting killed outright logs none)."""
    cache = [child.data.tags.get("pretrain_cache") for child in children]
    history = client.get_metric_history(parent.info.run_id, "study_wall_seconds")
    sittings = [m.value for m in sorted(history, key=lambda m: m.timestamp)]
    if not sittings:
        wall_text = "wall time not logged"
    else:
        wall = sum(sittings)
        wall_text = f"{wall:.0f} s wall time" if wall < 120 else f"{wall / 60:.1f} min wall time"
        if len(sittings) > 1:
            wall_text += f" in {len(sittings)} sittings (" + " + ".join(
                f"{value / 60:.1f}" for value in sittings) + " min)"
    return (f"- Cost: {wall_text}; source pre-training cache: {cache.count('miss')} pre-trainings for "
            f"{len(children)} trials ({cache.count('hit')} hits)")


def table_section(table: Table, trials: pd.DataFrame, cycles: pd.DataFrame, out: Path) -> list[str]:
    """A declared table: final-cycle cells with intervals and the claims' verdicts, the best-cycle version
    folded away, and (for the class-count table) whether K bound."""
    tables.table_csv_frame(table, trials, "final").to_csv(out / f"{table.id}.csv", index=False)
    lines = ["", f"## {table.title}", "", tables.table_markdown(table, trials, "final")]
    claims = tables.claim_lines(table, trials, "final")
    if claims:
        lines += ["", "The paper's claims, judged on the final cycle:", "", *claims]
    lines += ["", "<details><summary>The same table at each trial's best cycle (an oracle: it picks the cycle "
              "with target labels)</summary>", "", tables.table_markdown(table, trials, "best"), "", "</details>"]
    if table.k_evidence:
        lines += ["", f"### Does K bind? ({table.id})", "",
                  "K caps the base classes at the K largest DBSCAN clusters; it changes anything only when "
                  "DBSCAN finds more clusters than K.", "", *k_binding_markdown(table, cycles, trials)]
    return lines


def confirmation_lines(search: _LoadedStudy, results_dir: Path) -> list[str]:
    """A search's best value was picked among many tries on its own seeds, so it is biased upwards: its report
    shows the retraining on fresh seeds beside it (the studies ``study.confirm`` names ``<search>-confirm*``)."""
    prefix = f"{search.name}-confirm"
    names = sorted(e.name for e in search.client.search_experiments(filter_string=f"name LIKE '{prefix}%'")
                   if e.name.startswith(prefix))  # LIKE also reads '_' in a study name as a wildcard
    confirmed: list[str] = []
    for name in names:
        try:
            study = _LoadedStudy.load(name, search.tracking_uri)
        except ValueError:  # created, but no trial has started
            continue
        table = next((t for t in study.tables() if t.id == "confirmation"), None)
        if table is None:  # a study that merely shares the prefix
            continue
        status = study.parent.info.status
        report = (f"[its report](../{name}/README.md)" if (results_dir / name / "README.md").is_file()
                  else f"its report: `python -m study.report --study {name}`")
        confirmed += ["", f"### `{name}`" + ("" if status == "FINISHED" else f" (parent run {status}: partial)"),
                      "", f"{study.space.get('description', '')}; {report}.", "",
                      tables.table_markdown(table, study.trials, "final")]
        claims = tables.claim_lines(table, study.trials, "final")
        confirmed += ["", *claims] if claims else []
    heading = ["", "## Confirmation on fresh seeds"]
    if confirmed:
        return heading + confirmed
    if len(search.objectives) > 1:  # study.confirm retrains the best of one objective only
        return []
    return heading + ["", f"Not confirmed yet: the best trial above is the best of {len(search.trials)} on the "
                    f"search's own seed(s). `python -m study.confirm --study {search.name} --seeds 3` retrains "
                    "it, the paper default and the supervised upper bound on fresh seeds."]


def front_section(space: dict, objectives: list[dict], cycles: pd.DataFrame, trials: pd.DataFrame,
                  out: Path) -> list[str]:
    """The trade-off of a multi-objective search: its Pareto front as a table and a plot."""
    frame = final_values(cycles, trials, [o["metric"] for o in objectives])
    if frame.empty:
        return ["", "## Pareto front", "", "No trial finished all its cycles."]
    front = pareto_front(frame, objectives)
    marked = start_point_trials(frame, space.get("search", {}).get("start_points") or [])
    front.to_csv(out / "pareto_front.csv", index=False)
    plot_front(frame, front, objectives, marked, out / "pareto_front.png")
    params = varying_params(frame)
    return ["", "## Pareto front (final cycle, finished trials)", "",
            f"{len(front)} of {len(frame)} finished trials are not beaten in every objective by another; "
            + ("the starred point is " + ", ".join(sorted(set(marked.values()))) + "." if marked else
               "no start point was evaluated."),
            "", front_markdown(front, objectives, marked, params), "", "![Pareto front](pareto_front.png)"]


@dataclass(frozen=True)
class _LoadedStudy:
    """What a report is built from: the study's runs as MLflow holds them, its space and the frames."""

    name: str
    tracking_uri: str
    client: MlflowClient
    parent: Any
    children: list
    space: dict
    cycles: pd.DataFrame
    trials: pd.DataFrame

    @classmethod
    def load(cls, study_name: str, tracking_uri: str) -> _LoadedStudy:
        client = MlflowClient(tracking_uri)
        parent, children = load_runs(client, study_name, tracking_uri)
        space = load_space_dict(client, parent)
        cycles = cycle_frame(client, children)
        return cls(study_name, tracking_uri, client, parent, children, space, cycles, trial_frame(children, cycles))

    def tables(self) -> list[Table]:
        """The tables the space declares, checked against its variants."""
        return parse_tables(self.space.get("tables"), [v["name"] for v in self.space.get("variants", [])])

    @property
    def objectives(self) -> list[dict]:
        return self.space.get("search", {}).get("objectives") or []


def write_report(study_name: str, results_dir: Path, tracking_uri: str, *, optuna_storage: str | None = None,
                 out: Path | None = None) -> Path:
    """Write README.md, CSVs and PNGs into ``out`` (default ``<results_dir>/<study_name>/``); return the README's
    path. ``study.publish.publish_report`` is the atomic, partial-aware way to a study's results folder."""
    if not study_name or Path(study_name).name != study_name:
        raise ValueError(f"study name {study_name!r} must be a plain folder name (no '/'); pass --study NAME")
    results_dir = Path(results_dir).expanduser().resolve()
    study = _LoadedStudy.load(study_name, tracking_uri)
    out = Path(out) if out is not None else results_dir / study_name
    out.mkdir(parents=True, exist_ok=True)
    study.trials.to_csv(out / "trials.csv", index=False)
    study.cycles.merge(study.trials[["trial", "variant", "direction", "seed"]], on="trial").to_csv(
        out / "cycles.csv", index=False)

    lines = _header_lines(study, regenerate_command(study_name, results_dir, tracking_uri, optuna_storage))
    for table in study.tables():
        lines += table_section(table, study.trials, study.cycles, out)
    if study.space.get("kind") == "search":
        lines += confirmation_lines(study, results_dir)
    if len(study.objectives) > 1:
        lines += front_section(study.space, study.objectives, study.cycles, study.trials, out)
    if (study.trials["cycles"] > 0).any():
        lines += _results_lines(study, out, optuna_storage)
    readme = out / "README.md"
    readme.write_text("\n".join(lines) + "\n")
    return readme


def _header_lines(study: _LoadedStudy, command: str) -> list[str]:
    """How to regenerate the report, what the study is, and how to read its cells."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    trials, space, parent = study.trials, study.space, study.parent
    statuses = ", ".join(f"{count} {name}" for name, count in trials["outcome"].value_counts().items())
    seeds = sorted(trials["seed"].dropna().astype(int).unique())
    return [
        f"Regenerated by `{command}` on {now} ({machine_line()}).",
        "",
        f"# Study `{study.name}`",
        "",
        *([f"{space['description']}", ""] if space.get("description") else []),
        f"- MLflow: `{study.tracking_uri}`, experiment `{study.name}`, parent run `{parent.info.run_id}` "
        f"(git commit `{parent.data.tags.get('git_commit', 'unknown')}`)",
        f"- Trials: {len(trials)} ({statuses}); seeds: {', '.join(map(str, seeds)) or 'not logged'}",
        cost_line(study.client, parent, study.children),
        "- **final** = the trial's last cycle; **best** = its cycle with the highest target mAP (R1 etc. "
        "from that same cycle). Target-domain results in %.",
        "- A cell is the mean over seeds ± the half-width of its 95% Student-t interval (no ± with one seed); "
        "Δ is the paired difference over seeds against the row named, marked (n.s.) when its interval "
        "includes 0. A claim is *reproduced* when that interval lies above 0, *refuted* when below.",
        "- D->M = any direction into a Market-like target (market1501, synthetic_market), M->D the others. "
        "Paper numbers as printed (real Market-1501/DukeMTMC-reID, ResNet-50, full schedule); "
        "see docs/method.md.",
    ]


def _results_lines(study: _LoadedStudy, out: Path, optuna_storage: str | None) -> list[str]:
    """The sections every study with finished cycles gets: best trials, search history, importances, and
    the per-cycle plots and ULA tables."""
    trials, cycles = study.trials, study.cycles
    lines = ["", "## Best trials (by final-cycle target mAP)", "", best_trials_markdown(trials)]
    if study.space.get("kind") == "search":
        plot_history(trials, out / "history.png")
        lines += ["", "![search history](history.png)"]
    lines += _importance_lines(study, out, optuna_storage)
    plot_cycles(cycles, trials, {OBJECTIVE: "target mAP (%)"}, out / "target_map.png")
    plot_cycles(cycles, trials, {"ula_num_labelled": "pseudo-labelled target samples",
                                 "ula_precision": "pseudo-label precision"}, out / "ula.png")
    return lines + ["", "## Per cycle", "", "![target mAP per cycle](target_map.png)", "",
                    "![labelled samples and pseudo-label precision](ula.png)", "",
                    "## ULA diagnostics per trial", "", ula_markdown(cycles, trials)]


def _importance_lines(study: _LoadedStudy, out: Path, optuna_storage: str | None) -> list[str]:
    """fANOVA importances per objective, from the Optuna storage when there is one, else from the runs."""
    metrics = [o["metric"] for o in study.objectives] or [OBJECTIVE]
    importances = (importances_from_optuna(study.name, optuna_storage, metrics) if optuna_storage
                   else {OBJECTIVE: importances_from_trials(study.trials)})
    importances = {k: v for k, v in importances.items() if v}
    if not importances:
        return []
    source = f"Optuna storage `{optuna_storage}`" if optuna_storage else (
        f"an in-memory Optuna study of the MLflow runs (objective: final-cycle {OBJECTIVE})")
    plot_importances(importances, out / "importance.png")
    names = list(next(iter(importances.values())))
    return ["", "## Parameter importances", "", f"fANOVA (seed 0) from {source}.", "",
            markdown_table(["parameter", *importances],
                           [[name, *(fmt(v.get(name), 3) for v in importances.values())] for name in names]),
            "", "![importances](importance.png)"]


if __name__ == "__main__":  # the CLI publishes, so it lives with the publishing (study.publish)
    from study.publish import main

    main()

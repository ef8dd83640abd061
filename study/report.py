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

import argparse
import json
import math
import os
import platform
import shlex
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import optuna
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from mlflow import MlflowClient

from study.outcome import publish_report
from study.tracking import (
    HISTORY_PREFIX,
    TAG_PARENT,
    TAG_ROLE,
    TAG_TRIAL,
    default_tracking_uri,
    find_experiment_id,
)

DIRECTIONS = ("D->M", "M->D")
MARKET_LIKE = ("market1501", "synthetic_market")
FINAL_VARIANT = "ULA(750)+KD(0.5)"  # the paper's final method: CSAM-ReID + ULA(750) + KD(0.5)
OBJECTIVE = "target_mAP"
RANKS = ("R1", "R5", "R10", "mAP")

# METHOD.md section 7: target-domain results (%) as printed in the paper, keyed by the `variant` tag.
PAPER_ABLATION = {
    "Baseline": {"D->M": {"R1": 27.2, "mAP": 14.5}, "M->D": {"R1": 25.5, "mAP": 13.9}},
    "CSAM-ReID": {"D->M": {"R1": 31.8, "mAP": 20.1}, "M->D": {"R1": 36.6, "mAP": 22.3}},
    "ULA(700)": {"D->M": {"R1": 44.1, "mAP": 28.5}, "M->D": {"R1": 48.9, "mAP": 31.6}},
    "ULA(750)": {"D->M": {"R1": 48.2, "mAP": 32.0}, "M->D": {"R1": 54.7, "mAP": 35.1}},
    "ULA(800)": {"D->M": {"R1": 48.5, "mAP": 32.2}, "M->D": {"R1": 53.9, "mAP": 34.8}},
    "ULA(850)": {"D->M": {"R1": 45.4, "mAP": 30.7}, "M->D": {"R1": 52.9, "mAP": 34.6}},
    "ULA(750)+KD(0.1)": {"D->M": {"R1": 40.3, "mAP": 28.2}, "M->D": {"R1": 44.6, "mAP": 30.6}},
    "ULA(750)+KD(0.3)": {"D->M": {"R1": 44.3, "mAP": 31.2}, "M->D": {"R1": 54.6, "mAP": 34.6}},
    "ULA(750)+KD(0.5)": {"D->M": {"R1": 48.6, "mAP": 33.1}, "M->D": {"R1": 56.5, "mAP": 36.1}},
    "ULA(750)+KD(0.7)": {"D->M": {"R1": 48.4, "mAP": 32.5}, "M->D": {"R1": 55.9, "mAP": 35.8}},
}
# Table 3: R1, R5, R10, mAP per direction; None where the paper prints "-".
PAPER_TABLE3 = {
    "PUL": {"D->M": (30.4, 44.5, 50.7, 16.4), "M->D": (44.7, 59.1, 65.6, 20.1)},
    "TJ-AIDL": {"D->M": (44.3, 59.6, 65.0, 23.0), "M->D": (58.2, 74.8, 81.1, 26.5)},
    "IPGAN": {"D->M": (47.0, 63.0, 68.1, 27.0), "M->D": (57.2, 76.0, 82.7, 28.0)},
    "PTGAN": {"D->M": (27.4, None, 50.7, None), "M->D": (38.6, None, 66.1, None)},
    "SPGAN": {"D->M": (41.1, 56.6, 63.0, 22.3), "M->D": (51.5, 70.1, 76.8, 22.8)},
    "DDNDA": {"D->M": (38.1, 55.0, 62.2, 17.1), "M->D": (28.4, 41.5, 49.9, 17.6)},
    "this paper (CSAM-ReID + ULA(750) + KD(0.5))": {"D->M": (48.6, 58.7, 66.3, 33.1),
                                                    "M->D": (56.5, 69.4, 75.4, 36.1)},
}
# Row labels as the paper prints them.
TABLE1_ROWS = {"Baseline": "Baseline (ResNet50)", "CSAM-ReID": "CSAM-ReID", "ULA(700)": "+ ULA(700)",
               "ULA(750)": "+ ULA(750)", "ULA(800)": "+ ULA(800)", "ULA(850)": "+ ULA(850)"}
TABLE2_ROWS = {"ULA(750)": "CSAM-ReID + ULA(750)", "ULA(750)+KD(0.1)": "+ KD(0.1)",
               "ULA(750)+KD(0.3)": "+ KD(0.3)", "ULA(750)+KD(0.5)": "+ KD(0.5)", "ULA(750)+KD(0.7)": "+ KD(0.7)"}
ULA_COLUMNS = {"ula_num_clusters": "clusters", "ula_num_classes": "classes", "ula_num_labelled": "labelled",
               "ula_labelled_fraction": "labelled fraction", "ula_precision": "precision",
               "ula_recall": "recall", "ula_degenerate": "degenerate", "target_mAP": "target mAP"}
ULA_DIGITS = {"ula_num_clusters": 0, "ula_num_classes": 0, "ula_num_labelled": 0, "ula_degenerate": 0,
              "target_mAP": 1}  # the fractions get 3 digits


def table_column(direction: str | None) -> str | None:
    """D->M is any direction into a Market-like target, M->D any other; None when the tag is malformed."""
    parts = (direction or "").split("->")
    if len(parts) != 2 or not all(parts):
        return None
    return "D->M" if parts[1] in MARKET_LIKE else "M->D"


def fmt(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


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
        record = {"trial": name, "run_id": run.info.run_id, "status": run.info.status,
                  "outcome": outcome(run), "trial_id": run.data.tags.get("trial_id"), "variant": run.data.tags.get("variant"), "direction": direction,
                  "column": table_column(direction), "cycles": 0}
        history = cycles[cycles["trial"] == name]
        if OBJECTIVE in history and history[OBJECTIVE].notna().any():
            final = history.iloc[-1]
            best = history.loc[history[OBJECTIVE].idxmax()]
            record.update(cycles=len(history), final_cycle=int(final["cycle"]), best_cycle=int(best["cycle"]))
            for rank in RANKS + ("mINP",):
                key = f"target_{rank}"
                record[f"final_{key}"] = final.get(key, math.nan)
                record[f"best_{key}"] = best.get(key, math.nan)
        record.update({f"params.{k}": v for k, v in sorted(run.data.params.items())})
        records.append(record)
    return pd.DataFrame.from_records(records)


# ---------------------------------------------------------------- tables

def ablation_table(trials: pd.DataFrame, rows: dict[str, str]) -> pd.DataFrame:
    """Paper layout: one row per variant, per direction R1/mAP of the paper, ours (final), ours (best)."""
    records = []
    for variant, label in rows.items():
        record = {"method": label, "variant": variant}
        for column in DIRECTIONS:
            cell = trials[(trials["variant"] == variant) & (trials["column"] == column)]
            cell = cell[cell["cycles"] > 0]
            record[f"{column} n"] = len(cell)
            for rank in ("R1", "mAP"):
                record[f"{column} {rank} paper"] = PAPER_ABLATION[variant][column][rank]
                for which in ("final", "best"):
                    key = f"{which}_target_{rank}"
                    record[f"{column} {rank} {which}"] = cell[key].mean() if len(cell) else math.nan
        records.append(record)
    return pd.DataFrame.from_records(records)


def ablation_markdown(table: pd.DataFrame, which: str) -> str:
    header = ["method"] + [f"{c} {r} {who}" for c in DIRECTIONS for r in ("R1", "mAP") for who in ("ours", "paper")]
    rows = []
    for _, row in table.iterrows():
        cells = [row["method"]]
        for column in DIRECTIONS:
            for rank in ("R1", "mAP"):
                ours = fmt(row[f"{column} {rank} {which}"])
                if row[f"{column} n"] > 1:
                    ours += f" (n={row[f'{column} n']})"
                cells += [ours, fmt(row[f"{column} {rank} paper"])]
        rows.append(cells)
    return markdown_table(header, rows)


def table3(trials: pd.DataFrame) -> pd.DataFrame:
    records = []
    for method, values in PAPER_TABLE3.items():
        record = {"method": method}
        for column in DIRECTIONS:
            record.update({f"{column} {rank}": v for rank, v in zip(RANKS, values[column], strict=True)})
        records.append(record)
    final = trials[(trials["variant"] == FINAL_VARIANT) & (trials["cycles"] > 0)]
    for which in ("final", "best"):
        record = {"method": f"ours, {FINAL_VARIANT}, {which} cycle"}
        for column in DIRECTIONS:
            cell = final[final["column"] == column]
            for rank in RANKS:
                key = f"{which}_target_{rank}"
                record[f"{column} {rank}"] = cell[key].mean() if len(cell) else math.nan
        records.append(record)
    return pd.DataFrame.from_records(records)


def table3_markdown(table: pd.DataFrame) -> str:
    header = ["method"] + [f"{c} {r}" for c in DIRECTIONS for r in RANKS]
    rows = [[row["method"]] + [fmt(row[h]) for h in header[1:]] for _, row in table.iterrows()]
    return markdown_table(header, rows)


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
            str(row["direction"]), row["outcome"], str(row["final_cycle"]), fmt(row[f"final_{OBJECTIVE}"]),
            fmt(row["final_target_R1"]), f"{fmt(row[f'best_{OBJECTIVE}'])} ({row['best_cycle']})"]
            + [significant(_parse(row[p])) for p in params])
    return markdown_table(header, rows)


def significant(value, digits: int = 4) -> str:
    """Sampled values to ``digits`` significant digits; lists (attention stages) joined with '+'."""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, list):
        return "+".join(map(str, value)) or "none"
    return str(value)


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


def importances_from_optuna(study_name: str, storage: str) -> dict[str, float]:
    if study_name not in optuna.study.get_all_study_names(storage):
        raise ValueError(f"Optuna storage {storage} has no study {study_name!r}; omit the storage to compute "
                         "importances from the MLflow runs")
    study = optuna.load_study(study_name=study_name, storage=storage)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2 or len({str(t.values) for t in complete}) < 2:
        return {}
    return optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))


# ---------------------------------------------------------------- plots

def _label(trials: pd.DataFrame, name: str) -> str:
    row = trials[trials["trial"] == name].iloc[0]
    return f"{row['variant']} ({name})" if isinstance(row["variant"], str) else name


def plot_cycles(cycles: pd.DataFrame, trials: pd.DataFrame, keys: dict[str, str], path: Path) -> None:
    """One row of panels per metric, one column per table direction, one line per trial."""
    columns = [c for c in DIRECTIONS if (trials["column"] == c).any()] or [None]
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


def plot_importances(importances: dict[str, float], path: Path) -> None:
    names = list(importances)[::-1]
    figure = Figure(figsize=(7, 0.4 * len(names) + 1.5), layout="tight")
    axis = figure.subplots()
    axis.barh(names, [importances[n] for n in names])
    axis.set_xlabel(f"fANOVA importance for final-cycle {OBJECTIVE}")
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
        keys = [k for k in ULA_COLUMNS if k in history]
        rows = [[str(int(row["cycle"]))] + [fmt(row[k], ULA_DIGITS.get(k, 3)) for k in keys]
                for _, row in history.iterrows()]
        table = markdown_table(["cycle"] + [ULA_COLUMNS[k] for k in keys], rows)
        blocks.append(f"<details><summary>{_label(trials, name)}</summary>\n\n{table}\n\n</details>")
    return "\n\n".join(blocks)


def cost_line(parent, children) -> str:
    """What the study cost, and how much of it the pre-training cache saved."""
    cache = [child.data.tags.get("pretrain_cache") for child in children]
    wall = parent.data.metrics.get("study_wall_seconds")
    if wall is None:
        wall_text = "wall time not logged"
    else:
        wall_text = f"{wall:.0f} s wall time" if wall < 120 else f"{wall / 60:.1f} min wall time"
    return (f"- Cost: {wall_text}; source pre-training cache: {cache.count('miss')} pre-trainings for "
            f"{len(children)} trials ({cache.count('hit')} hits)")


def write_report(study_name: str, results_dir: Path, tracking_uri: str, optuna_storage: str | None = None,
                 out: Path | None = None) -> Path:
    """Write README.md, CSVs and PNGs into ``out`` (default ``<results_dir>/<study_name>/``); return the README's
    path. ``study.outcome.publish_report`` is the atomic, partial-aware way to a study's results folder."""
    if not study_name or Path(study_name).name != study_name:
        raise ValueError(f"study name {study_name!r} must be a plain folder name (no '/'); pass --study NAME")
    results_dir = Path(results_dir).expanduser().resolve()
    client = MlflowClient(tracking_uri)
    parent, children = load_runs(client, study_name, tracking_uri)
    cycles = cycle_frame(client, children)
    trials = trial_frame(children, cycles)
    out = Path(out) if out is not None else results_dir / study_name
    out.mkdir(parents=True, exist_ok=True)
    trials.to_csv(out / "trials.csv", index=False)
    cycles.merge(trials[["trial", "variant", "direction"]], on="trial").to_csv(out / "cycles.csv", index=False)

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = regenerate_command(study_name, results_dir, tracking_uri, optuna_storage)
    statuses = ", ".join(f"{count} {name}" for name, count in trials["outcome"].value_counts().items())
    lines = [
        f"Regenerated by `{command}` on {now} ({machine_line()}).",
        "",
        f"# Study `{study_name}`",
        "",
        f"- MLflow: `{tracking_uri}`, experiment `{study_name}`, parent run `{parent.info.run_id}` "
        f"(git commit `{parent.data.tags.get('git_commit', 'unknown')}`)",
        f"- Trials: {len(trials)} ({statuses})",
        cost_line(parent, children),
        "- **final** = the trial's last cycle; **best** = its cycle with the highest target mAP (R1 etc. "
        "from that same cycle). Cells with several trials (n>1) are means. Target-domain results in %.",
        "- D->M = any direction into a Market-like target (market1501, synthetic_market), M->D the others. "
        "Paper numbers: METHOD.md section 7 (real Market-1501/DukeMTMC-reID, ResNet-50, full schedule).",
    ]

    for number, rows in ((1, TABLE1_ROWS), (2, TABLE2_ROWS)):
        if not trials["variant"].isin(list(rows)).any():
            continue
        table = ablation_table(trials, rows)
        table.to_csv(out / f"table{number}.csv", index=False)
        title = "ULA class count" if number == 1 else "KD factor mu, on top of CSAM-ReID + ULA(750)"
        for which in ("final", "best"):
            lines += ["", f"## Table {number}: {title} ({which} cycle)", "", ablation_markdown(table, which)]
    if (trials["variant"] == FINAL_VARIANT).any():
        table = table3(trials)
        table.to_csv(out / "table3.csv", index=False)
        lines += ["", "## Table 3: final method against published methods", "", table3_markdown(table)]

    if (trials["cycles"] > 0).any():
        lines += ["", "## Best trials (by final-cycle target mAP)", "", best_trials_markdown(trials)]
        importances = (importances_from_optuna(study_name, optuna_storage) if optuna_storage
                       else importances_from_trials(trials))
        if importances:
            source = f"Optuna storage `{optuna_storage}`" if optuna_storage else (
                f"an in-memory Optuna study of the MLflow runs (objective: final-cycle {OBJECTIVE})")
            plot_importances(importances, out / "importance.png")
            lines += ["", "## Parameter importances", "", f"fANOVA (seed 0) from {source}.", "",
                      markdown_table(["parameter", "importance"],
                                     [[name, fmt(value, 3)] for name, value in importances.items()]),
                      "", "![importances](importance.png)"]

        plot_cycles(cycles, trials, {OBJECTIVE: "target mAP (%)"}, out / "target_map.png")
        plot_cycles(cycles, trials, {"ula_num_labelled": "pseudo-labelled target samples",
                                     "ula_precision": "pseudo-label precision"}, out / "ula.png")
        lines += ["", "## Per cycle", "", "![target mAP per cycle](target_map.png)", "",
                  "![labelled samples and pseudo-label precision](ula.png)", "",
                  "## ULA diagnostics per trial", "", ula_markdown(cycles, trials)]

    readme = out / "README.md"
    readme.write_text("\n".join(lines) + "\n")
    return readme


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rebuild a study's report (tables, CSVs, plots) from MLflow.")
    parser.add_argument("--study", required=True, help="study name (= MLflow experiment name)")
    parser.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="results folder; the report goes to <results-dir>/<study>/ (default: results)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<results-dir>/mlflow.db)")
    parser.add_argument("--optuna-storage",
                        help="Optuna storage for importances (default: <results-dir>/optuna.db when it holds "
                             "the study, else importances are computed from the MLflow runs)")
    args = parser.parse_args(argv)
    results_dir = args.results_dir.expanduser().resolve()
    tracking_uri = args.tracking_uri or default_tracking_uri(results_dir)
    storage = args.optuna_storage
    default_storage = results_dir / "optuna.db"
    if storage is None and default_storage.is_file():
        candidate = f"sqlite:///{default_storage}"
        if args.study in optuna.study.get_all_study_names(candidate):
            storage = candidate
    try:
        readme = publish_report(args.study, results_dir, tracking_uri, storage)
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")
    print(readme)


if __name__ == "__main__":
    main()

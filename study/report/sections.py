"""The report's Markdown sections, each from a loaded study; the statistics of its tables are study.tables'."""

from __future__ import annotations

import math
import os
import platform
import shlex
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd

import study.report.optuna_view as optuna_view
import study.report.plots as plots
from reidmodel.config import list_text
from reidmodel.cycle_metrics import MISSING, metric
from study import tables
from study.paths import NOTE, default_tracking_uri
from study.report.load import OBJECTIVE, LoadedStudy, final_values, param_value
from study.report.validators import MIN_TRIALS, benchmark_lines, trials_with_validators
from study.spaces import required_selection, selection_of
from study.tables import Table, markdown_table

# The per-trial ULA diagnostics table, in column order; headers and cells from reidmodel.cycle_metrics.
ULA_TABLE = ("ula_num_clusters", "ula_requested_classes", "ula_num_classes", "ula_num_labelled",
             "ula_labelled_fraction", "ula_precision", "ula_recall", "ula_degenerate", "target_mAP")


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def cell(name: str, value) -> str:
    """A cycle metric's value as the registry formats it (reidmodel.cycle_metrics)."""
    return MISSING if _missing(value) else metric(name).format(value)


def significant(value, digits: int = 4) -> str:
    """Sampled values to ``digits`` significant digits; lists (attention stages) joined with '+'."""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, list):
        return list_text(value) or "none"
    return str(value)


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


def cost_line(study: LoadedStudy) -> str:
    """What the study cost, and how much of it the pre-training cache saved. Each sitting of a resumed study
    logs its own wall time, so the cost is their sum (a sitting killed outright logs none)."""
    cache = study.children.get("tags.pretrain_cache", pd.Series(dtype=object)).tolist()
    history = study.client.get_metric_history(study.parent.info.run_id, "study_wall_seconds")
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
            f"{len(study.children)} trials ({cache.count('hit')} hits)")


def selection_lines(space: dict) -> list[str]:
    """Say at the top when the study's settings were chosen on target labels: the target is unlabelled by
    definition, so an oracle's pick must never read as an unsupervised result."""
    chosen, name = selection_of(space), required_selection(space)[1]
    by = f" (by `{name}`)" if name else " (by the search it confirms)"
    notes = {
        "oracle": f"**Oracle-selected**: this study's settings were chosen on the target's test labels{by}, which "
                  "an unsupervised-adaptation user does not have: read its best as what selection with the "
                  "answers reaches, not as an unsupervised result (README, 'Choosing without target labels').",
        "validation": f"**Selected on target validation labels**{by}: labelled target identities held out of ULA's "
                      "pool (data.target_val_ids), disjoint from the test identities.",
    }
    return [notes[chosen], ""] if chosen in notes else []


def header_lines(study: LoadedStudy, command: str) -> list[str]:
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
        *selection_lines(space),
        f"- MLflow: `{study.tracking_uri}`, experiment `{study.name}`, parent run `{parent.info.run_id}` "
        f"(git commit `{parent.data.tags.get('git_commit', 'unknown')}`)",
        f"- Trials: {len(trials)} ({statuses}); seeds: {', '.join(map(str, seeds)) or 'not logged'}",
        machines_line(trials),
        cost_line(study),
        "- **final** = the trial's last cycle; **best** = its cycle with the highest target mAP (R1 etc. "
        "from that same cycle). Target-domain results in %.",
        "- A cell is the mean over seeds ± the half-width of its 95% Student-t interval (no ± with one seed); "
        "Δ is the paired difference over seeds against the row named, marked (n.s.) when its interval "
        "includes 0. A claim is *reproduced* when that interval lies above 0, *refuted* when below.",
        "- D->M = any direction into a Market-like target (market1501, synthetic_market), M->D the others. "
        "Paper numbers as printed (real Market-1501/DukeMTMC-reID, ResNet-50, full schedule); "
        "see docs/method.md.",
    ]


def machines_line(trials: pd.DataFrame) -> str:
    """Where the trials computed (the same seed gives other numbers on other kernels, threads or devices), as
    their runs' ``machine`` tag says; the header's first line names the machine that wrote the report."""
    machines = trials["machine"].dropna().value_counts()
    unrecorded = len(trials) - int(machines.sum())
    parts = [f"{name} ({count} trial{'s' * (count > 1)})" for name, count in machines.items()]
    parts += [f"not recorded for {unrecorded} (no cycle reported, or logged before trials recorded it)"] if unrecorded else []
    return f"- Trials ran on: {'; '.join(parts)}"


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


def confirmation_names(search: LoadedStudy) -> list[str]:
    """The studies that may retrain this search's best: named ``<search>-confirm*`` (study.confirm's default), or
    any whose description says it retrains it (``--name``, ``--beside``: "... best trial of <search> (...")."""
    marker = f"best trial of {search.name} ("
    return sorted(e.name for e in search.client.search_experiments()
                  if e.name.startswith(f"{search.name}-confirm") or marker in e.tags.get(NOTE, ""))


def confirmation_lines(search: LoadedStudy, results_dir: Path) -> list[str]:
    """A search's best value was picked among many tries on its own seeds, so it is biased upwards: its report
    shows the retraining on fresh seeds beside it (the studies of ``confirmation_names``)."""
    confirmed = []
    for name in confirmation_names(search):
        try:
            study = LoadedStudy.load(name, search.tracking_uri)
        except ValueError:  # created, but no trial has started
            continue
        table = next((t for t in study.tables() if t.id == "confirmation"), None)
        if table is None:  # a study that merely shares the prefix
            continue
        status = study.parent.info.status
        report = (f"[its report](../{name}/README.md)" if (results_dir / name / "README.md").is_file()
                  else f"its report: `python -m study.report --study {name}`")
        claims = tables.claim_lines(table, study.trials, "final")
        confirmed += ["", f"### `{name}`" + ("" if status == "FINISHED" else f" (parent run {status}: partial)"),
                      "", f"{study.space.get('description', '')}; {report}.", "",
                      tables.table_markdown(table, study.trials, "final"), *([""] + claims if claims else [])]
    if not confirmed and len(search.objectives) > 1:  # study.confirm retrains the best of one objective only
        return []
    return ["", "## Confirmation on fresh seeds"] + (confirmed or [
        "", f"Not confirmed yet: the best trial above is the best of {len(search.trials)} on the search's own "
        f"seed(s). `python -m study.confirm --study {search.name} --seeds 3` retrains it, the paper default and "
        "the supervised upper bound on fresh seeds."])


def validator_lines(study: LoadedStudy) -> list[str]:
    """The validator benchmark on this study alone, once it has enough trials with validators to rank."""
    if trials_with_validators(study) < MIN_TRIALS:
        return []
    return ["", "## Validator benchmark (reads target labels)", "", *benchmark_lines([study]), "",
            f"Across studies (choose a validator on others than the one it searches): `python -m study.validators "
            f"--study {study.name} --study OTHER`."]


def start_point_trials(frame: pd.DataFrame, start_points: list[dict]) -> dict[str, str]:
    """Trial name -> start-point name, for the trials that evaluated a space's ``search.start_points``."""
    found = {}
    for point in start_points:
        for _, row in frame.iterrows():
            if all(_same(row.get(f"params.{key}"), value) for key, value in point["params"].items()):
                found[row["trial"]] = point["name"]
    return found


def _same(logged, value) -> bool:
    parsed = param_value(logged)
    if isinstance(value, list):
        return parsed == list_text(value) or parsed == value
    if isinstance(value, (int, float)) and isinstance(parsed, (int, float)):
        return math.isclose(float(parsed), float(value), rel_tol=1e-9)
    return parsed == value


def front_section(study: LoadedStudy, out: Path) -> list[str]:
    """The trade-off of a multi-objective search: its Pareto front as a table and a plot."""
    objectives = study.objectives
    frame = final_values(study.cycles, study.trials, [o["metric"] for o in objectives])
    if frame.empty:
        return ["", "## Pareto front", "", "No trial finished all its cycles."]
    front, front_study = optuna_view.pareto_front(frame, objectives)
    marked = start_point_trials(frame, study.space.get("search", {}).get("start_points") or [])
    front.to_csv(out / "pareto_front.csv", index=False)
    plots.plot_front(front_study, frame[frame["trial"].isin(marked)], marked, out / "pareto_front.png")
    params = optuna_view.varying_params(frame)
    rows = [[row["trial"] + (f" ({marked[row['trial']]})" if row["trial"] in marked else "")]
            + [cell(o["metric"], row[o["metric"]]) for o in objectives]
            + [significant(param_value(row[p])) for p in params] for _, row in front.iterrows()]
    return ["", "## Pareto front (final cycle, finished trials)", "",
            f"{len(front)} of {len(frame)} finished trials are not beaten in every objective by another; "
            + ("the starred point is " + ", ".join(sorted(set(marked.values()))) + "." if marked else
               "no start point was evaluated."),
            "", markdown_table(["trial", *(o["metric"] for o in objectives),
                                *(p.removeprefix("params.") for p in params)], rows),
            "", "![Pareto front](pareto_front.png)"]


def best_trials_markdown(trials: pd.DataFrame, limit: int = 10) -> str:
    """final = the last cycle the trial reached (a trial the scheduler stopped early ends there)."""
    ranked = trials[trials["cycles"] > 0].sort_values(f"final_{OBJECTIVE}", ascending=False).head(limit)
    params = optuna_view.varying_params(trials)
    with_variant = ranked["variant"].notna().any()
    header = ["trial"] + (["variant"] if with_variant else []) + [
        "direction", "outcome", "final cycle", "final mAP", "final R1", "best mAP (cycle)"] + [
        p.removeprefix("params.") for p in params]
    rows = []
    for _, row in ranked.iterrows():
        rows.append([row["trial"]] + ([str(row["variant"])] if with_variant else []) + [
            str(row["direction"]), row["outcome"], str(row["final_cycle"]), cell(OBJECTIVE, row[f"final_{OBJECTIVE}"]),
            cell("target_R1", row["final_target_R1"]), f"{cell(OBJECTIVE, row[f'best_{OBJECTIVE}'])} ({row['best_cycle']})"]
            + [significant(param_value(row[p])) for p in params])
    return markdown_table(header, rows)


def importance_lines(study: LoadedStudy, out: Path, optuna_storage: str | None) -> list[str]:
    """fANOVA importances per objective, from the Optuna storage when there is one, else from the runs."""
    metrics = [o["metric"] for o in study.objectives] or [OBJECTIVE]
    importance_study = optuna_view.importance_study(study.trials, study.name, optuna_storage, metrics)
    importances = {k: v for k, v in optuna_view.importances(importance_study).items() if v} if importance_study else {}
    if not importances:
        return []
    source = f"Optuna storage `{optuna_storage}`" if optuna_storage else (
        f"an in-memory Optuna study of the MLflow runs (objective: final-cycle {OBJECTIVE})")
    plots.plot_importances(importance_study, out / "importance.png")
    names = list(next(iter(importances.values())))
    return ["", "## Parameter importances", "", f"fANOVA (seed 0) from {source}.", "",
            markdown_table(["parameter", *importances],
                           [[name, *(f"{v[name]:.3f}" if name in v else MISSING for v in importances.values())]
                            for name in names]),
            "", "![importances](importance.png)"]


def ula_markdown(cycles: pd.DataFrame, trials: pd.DataFrame) -> str:
    """Collapsible per-trial tables, so a search with many trials keeps the report readable."""
    blocks = []
    for name, history in cycles.groupby("trial", sort=True):
        keys = [k for k in ULA_TABLE if k in history]
        rows = [[cell("cycle", row["cycle"])] + [cell(k, row[k]) for k in keys] for _, row in history.iterrows()]
        table = markdown_table([metric("cycle").label] + [metric(k).label for k in keys], rows)
        blocks.append(f"<details><summary>{plots.trial_label(trials, name)}</summary>\n\n{table}\n\n</details>")
    return "\n\n".join(blocks)


def results_lines(study: LoadedStudy, out: Path, optuna_storage: str | None) -> list[str]:
    """The sections every study with finished cycles gets: best trials, search history, importances, and
    the per-cycle plots and ULA tables."""
    trials, cycles = study.trials, study.cycles
    lines = ["", "## Best trials (by final-cycle target mAP)", "", best_trials_markdown(trials)]
    if study.space.get("kind") == "search":
        plots.plot_history(optuna_view.history_study(trials), out / "history.png")
        lines += ["", "![search history](history.png)"]
    lines += importance_lines(study, out, optuna_storage)
    plots.plot_cycles(cycles, trials, {OBJECTIVE: "target mAP (%)"}, out / "target_map.png")
    plots.plot_cycles(cycles, trials, {"ula_num_labelled": "pseudo-labelled target samples",
                                       "ula_precision": "pseudo-label precision"}, out / "ula.png")
    return lines + ["", "## Per cycle", "", "![target mAP per cycle](target_map.png)", "",
                    "![labelled samples and pseudo-label precision](ula.png)", "",
                    "## ULA diagnostics per trial", "", ula_markdown(cycles, trials)]

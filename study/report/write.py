"""A study's report written into a folder: README.md with its sections, the CSVs and the plots."""

from __future__ import annotations

from pathlib import Path

import study.report.sections as sections
from study.report.load import LoadedStudy


def write_report(study_name: str, results_dir: Path, tracking_uri: str, *, optuna_storage: str | None = None,
                 out: Path | None = None) -> Path:
    """Write README.md, CSVs and PNGs into ``out`` (default ``<results_dir>/<study_name>/``); return the README's
    path. ``publish_report`` is the atomic, partial-aware way to a study's results folder."""
    if not study_name or Path(study_name).name != study_name:
        raise ValueError(f"study name {study_name!r} must be a plain folder name (no '/'); pass --study NAME")
    results_dir = Path(results_dir).expanduser().resolve()
    study = LoadedStudy.load(study_name, tracking_uri)
    out = Path(out) if out is not None else results_dir / study_name
    out.mkdir(parents=True, exist_ok=True)
    study.trials.to_csv(out / "trials.csv", index=False)
    study.cycles.merge(study.trials[["trial", "variant", "direction", "seed"]], on="trial").to_csv(
        out / "cycles.csv", index=False)

    lines = sections.header_lines(study, sections.regenerate_command(study_name, results_dir, tracking_uri, optuna_storage))
    for table in study.tables():
        lines += sections.table_section(table, study.trials, study.cycles, out)
    if study.space.get("kind") == "search":
        lines += sections.confirmation_lines(study, results_dir)
    if len(study.objectives) > 1:
        lines += sections.front_section(study, out)
    lines += sections.validator_lines(study)
    if (study.trials["cycles"] > 0).any():
        lines += sections.results_lines(study, out, optuna_storage)
    readme = out / "README.md"
    readme.write_text("\n".join(lines) + "\n")
    return readme

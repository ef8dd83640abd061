"""``python -m study.report --study NAME``: rebuild a study's report from MLflow into its results folder."""

from __future__ import annotations

import argparse
from pathlib import Path

import optuna

from study.outcome import publish_report
from study.paths import OPTUNA_DB, StudyPaths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m study.report",
                                     description="Rebuild a study's report (tables, CSVs, plots) from MLflow.")
    parser.add_argument("--study", required=True, help="study name (= MLflow experiment name)")
    parser.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="results folder; the report goes to <results-dir>/<study>/ (default: results)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<results-dir>/mlflow.db)")
    parser.add_argument("--optuna-storage",
                        help="Optuna storage for importances (default: <results-dir>/optuna.db when it holds "
                             "the study, else importances are computed from the MLflow runs)")
    args = parser.parse_args(argv)
    paths = StudyPaths.resolve(args.study, args.results_dir, tracking_uri=args.tracking_uri, search=True)
    storage = args.optuna_storage
    if storage is None and (paths.results_dir / OPTUNA_DB).is_file():
        storage = paths.optuna_storage if args.study in optuna.study.get_all_study_names(paths.optuna_storage) else None
    try:
        readme = publish_report(args.study, paths.results_dir, paths.tracking_uri, storage)
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")
    print(readme)


if __name__ == "__main__":
    main()

"""Publish a study's report: written from MLflow into a fresh folder that is then swapped in, so no file of an
earlier report survives beside the new ones, and ``results/<name>/`` is only ever written from a FINISHED parent
run (study.outcome says what the other endings mean): another study's crash or a Ctrl-C never touches a finished
study's results.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Any

from study.lock import DriverLock, StudyRunning
from study.paths import OPTUNA_DB, PARTIAL_SUFFIX, default_tracking_uri
from study.preflight import check_store, check_tracking_uri
from study.spaces import SpaceError


def report_folder(results_dir: Path, study_name: str, finished: bool) -> Path:
    return Path(results_dir) / (study_name if finished else study_name + PARTIAL_SUFFIX)


def publish_report(study_name: str, results_dir: Path, tracking_uri: str, optuna_storage: str | None = None) -> Path:
    """Write the study's report from MLflow into a fresh folder and swap it in; returns its README.

    The folder is ``results/<name>/`` when the latest parent run is FINISHED, else ``results/<name>.partial/``
    with a first line saying why; a parent left RUNNING by a driver that died is marked KILLED first.
    """
    # Here, not at the top: matplotlib, MLflow and Ray take seconds to import, and a bad --results-dir is refused
    # before them.
    from study.report.load import load_runs
    from study.report.write import write_report
    from study.tracking import MlflowClient, close_dead_parent

    client = MlflowClient(tracking_uri)
    parent, _ = load_runs(client, study_name, tracking_uri)
    try:
        with DriverLock(results_dir, study_name):  # free: no driver of this study runs, a RUNNING parent is dead
            note = close_dead_parent(client, parent)
    except StudyRunning:  # the study's own driver at its end, or a report asked for while the study runs
        note = None
    if note:
        print(note, flush=True)
        parent = client.get_run(parent.info.run_id)
    finished = parent.info.status == "FINISHED"
    target = report_folder(Path(results_dir).expanduser().resolve(), study_name, finished)
    staging = target.with_name(f".{target.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        readme = write_report(study_name, results_dir, tracking_uri, optuna_storage=optuna_storage,
                              out=staging)
        if not finished:
            _mark_partial(readme, parent, target.name)
        swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if finished:  # a finished study has no partial report any more
        shutil.rmtree(report_folder(target.parent, study_name, finished=False), ignore_errors=True)
    return target / readme.name


def swap_in(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging`` with two renames: the old folder is never written into, and a crash
    between the renames leaves it whole as ``.<name>.old-<pid>`` beside."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def _mark_partial(readme: Path, parent: Any, folder: str) -> None:
    why = parent.data.tags.get("stop_reason")
    status = parent.info.status + (f" ({why})" if why else "")
    readme.write_text(f"> **Partial report**: the study's MLflow parent run is {status}, so this is not the study's "
                      f"result. `{folder}/` is rewritten when the study is resumed; the study's own folder only once "
                      "it finishes.\n\n" + readme.read_text())


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
    default_storage = results_dir / OPTUNA_DB
    try:
        check_stores(results_dir, tracking_uri, default_store=args.tracking_uri is None)
        if storage is None and default_storage.is_file():
            import optuna

            candidate = f"sqlite:///{default_storage}"
            if args.study in optuna.study.get_all_study_names(candidate):
                storage = candidate
        readme = publish_report(args.study, results_dir, tracking_uri, storage)
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")
    print(readme)


def check_stores(results_dir: Path, tracking_uri: str, default_store: bool) -> None:
    """A report reads a study's stores, never makes them: a mistyped --results-dir would otherwise become a new
    folder with an empty mlflow.db (MLflow creates the SQLite store it is pointed at)."""
    flag = "pass the --results-dir the study ran with"
    if not results_dir.is_dir():
        raise SpaceError(f"--results-dir {results_dir} does not exist: {flag}")
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    if default_store and not database.is_file():
        raise SpaceError(f"--results-dir {results_dir} holds no {database.name}: {flag}, or its --tracking-uri")
    check_tracking_uri(tracking_uri)
    check_store(results_dir / OPTUNA_DB, "Optuna", "pass --optuna-storage")

"""What a study's end means, so that an interrupted or failed study never passes for a finished one.

Exit code, MLflow status and report folder follow from one count of the trials:

| outcome | exit code | parent run | report |
|---|---|---|---|
| every trial finished (or stopped early by a scheduler) | 0 | FINISHED | ``results/<name>/`` |
| some trial failed | 1 | FAILED | ``results/<name>.partial/`` |
| interrupted (SIGINT/SIGTERM): trials left unfinished | 130 | KILLED | ``results/<name>.partial/`` |

A report is written into a fresh folder that is then swapped in, so no file of an earlier report survives
beside the new ones, and ``results/<name>/`` is only ever written from a FINISHED parent run: another study's
crash or a Ctrl-C never touches a finished study's results.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reidmodel.messages import one_line as message_line

PARTIAL_SUFFIX = ".partial"
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130  # the shell's code for SIGINT
INTERRUPTED = "interrupted"  # stop_reason of a trial run the study's end left unfinished

# Errors that come back unchanged when the same trial runs again: bad config or data, a programming error, a
# diverged training. Anything else (OSError, CUDA and Ray errors, a killed process) may pass on a retry.
DETERMINISTIC_ERRORS = (ValueError, TypeError, LookupError, AttributeError, ArithmeticError, NotImplementedError)


def one_line(exc: BaseException) -> str:
    """The exception's type and message on one line, as a trial's ``error`` tag shows it."""
    return f"{type(exc).__name__}: {message_line(exc)}"


def is_deterministic(exc: BaseException) -> bool:
    return isinstance(exc, DETERMINISTIC_ERRORS)


@dataclass(frozen=True)
class StudyOutcome:
    expected: int
    finished: int  # ran to its end, or was stopped early by a scheduler or stopper
    failed: int

    @classmethod
    def of(cls, space, trial_runs: list) -> StudyOutcome:
        """Counted from the study's trial runs once its end closed them all (study.tracking): FINISHED, or KILLED
        early by the scheduler or a stopper, is finished; KILLED as ``interrupted`` (Ctrl-C, SIGTERM, a dead
        driver) is not. Trials not created yet (a search cut short) count as unfinished."""
        expected = len(space.trials()) if space.kind == "grid" else space.search.num_samples
        statuses = [(run.info.status, run.data.tags.get("stop_reason")) for run in trial_runs]
        finished = sum(status == "FINISHED" or (status == "KILLED" and reason not in (None, INTERRUPTED))
                       for status, reason in statuses)
        failed = sum(status == "FAILED" for status, _ in statuses)
        return cls(max(expected, len(statuses)), finished, failed)

    @property
    def unfinished(self) -> int:
        return self.expected - self.finished - self.failed

    @property
    def status(self) -> str:
        """The parent run's MLflow status."""
        return "KILLED" if self.unfinished else "FAILED" if self.failed else "FINISHED"

    @property
    def exit_code(self) -> int:
        return EXIT_INTERRUPTED if self.unfinished else EXIT_FAILED if self.failed else 0

    def summary(self, name: str) -> str | None:
        """One line for stderr when the study did not finish, naming what to do next."""
        if self.unfinished:
            return (f"study {name!r} interrupted: {self.unfinished} of {self.expected} trials unfinished; "
                    "continue it with the same command and --resume")
        if self.failed:
            return (f"study {name!r} finished with {self.failed} failed trial(s) of {self.expected}: see their "
                    "error tag in MLflow; after fixing the cause, --resume runs them again")
        return None


def report_folder(results_dir: Path, study_name: str, finished: bool) -> Path:
    return Path(results_dir) / (study_name if finished else study_name + PARTIAL_SUFFIX)


def publish_report(study_name: str, results_dir: Path, tracking_uri: str, optuna_storage: str | None = None) -> Path:
    """Write the study's report from MLflow into a fresh folder and swap it in; returns its README.

    The folder is ``results/<name>/`` when the latest parent run is FINISHED, else ``results/<name>.partial/``
    with a first line saying why; a parent left RUNNING by a driver that died is marked KILLED first.
    """
    from mlflow import MlflowClient

    from study.lock import DriverLock, StudyRunning
    from study.report import load_runs, write_report
    from study.tracking import close_dead_parent

    client = MlflowClient(tracking_uri)
    parent, _ = load_runs(client, study_name, tracking_uri)
    try:
        with DriverLock(results_dir, study_name):  # free: no driver of this study runs, a RUNNING parent is dead
            note = close_dead_parent(client, parent)
    except StudyRunning:  # the study's own driver, at its end, or a report asked for while the study runs
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

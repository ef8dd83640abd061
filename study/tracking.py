"""MLflow bookkeeping of a study: one experiment per study, one parent run, one nested child run per trial.

Everything goes through ``mlflow.MlflowClient`` with explicit run ids, never ``mlflow.start_run``: trials
run in many processes (and threads of the Ray driver) and a global active run would leak between them.
Runs are found again by tags, so a resumed study continues its parent and child runs instead of
duplicating them.
"""

from __future__ import annotations

import csv
import json
import math
import numbers
import os
import socket
import subprocess
import time
from pathlib import Path

# Nothing of ours talks to the outside by default: MLflow 3 would otherwise send usage telemetry.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Reports read small artifacts (the space, a trial's config.yaml): no progress bars on stderr.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.utils.validation import (  # noqa: E402
    MAX_ENTITY_KEY_LENGTH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from reidmodel.config import flatten  # noqa: E402
from reidmodel.cycle_metrics import METRICS  # noqa: E402
from reidmodel.messages import suggest  # noqa: E402

# Tags that identify the runs of a study; the report reads them too.
TAG_STUDY = "study"
TAG_ROLE = "study.role"  # "parent" or "trial"
TAG_TRIAL = "trial_name"
TAG_PARENT = "mlflow.parentRunId"
TAG_HISTORY_ROWS = "history_rows_logged"
NOTE = "mlflow.note.content"  # MLflow's description field
TAG_DRIVER = "driver"  # HOST:PID:START of the driver process, to tell a driver that died from one still running
TAG_RETRY = "retry"  # "no" on a trial run that failed deterministically: Ray's retry fails at once; --resume clears it
END_TAGS = ("error", "error_kind", "stop_reason", "stopped_at_cycle")  # why a run ended; dropped when it restarts
HISTORY_PREFIX = "epoch_"  # per-epoch metrics from history.csv, kept apart from the per-cycle ones
HISTORY_INDEX_COLUMNS = ("stage", "cycle", "epoch")


def git_commit() -> str | None:
    """Commit of the checkout this code runs from; None outside a git checkout or before the first commit."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                                capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def driver_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid())}"


def driver_alive(identity: str) -> bool | None:
    """Whether the driver named by a ``driver`` tag still runs; None when it ran on another host."""
    host, pid, start = identity.rsplit(":", 2)
    if host != socket.gethostname():
        return None
    if start != "?":
        return _process_start(int(pid)) == start
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _process_start(pid: int) -> str:
    """Start time in clock ticks since boot (Linux), so that a later process with the same pid is not taken for
    the driver; "?" where /proc has no such entry."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def close_dead_parent(client: MlflowClient, parent) -> str | None:
    """A parent run left RUNNING by a driver that is gone (SIGKILL, a crash, a reboot) is marked KILLED, its
    open trial runs too; returns a line saying so, or None when the parent is closed or its driver lives (or
    ran on another host, where this cannot be told)."""
    identity = parent.data.tags.get(TAG_DRIVER)
    if parent.info.status != "RUNNING" or identity is None or driver_alive(identity) is not False:
        return None
    run_id = parent.info.run_id
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{TAG_PARENT}` = '{run_id}' and attributes.status = 'RUNNING'")
    for child in children:
        client.set_terminated(child.info.run_id, status="KILLED")
    client.set_tag(run_id, "stop_reason", f"driver {identity} died")
    client.set_terminated(run_id, status="KILLED")
    return (f"parent run {run_id} was still RUNNING but its driver ({identity}) is gone: marked KILLED "
            f"with {len(children)} open trial run(s)")



def _param_value(value) -> str:
    text = str(value) if isinstance(value, (str, Path)) else json.dumps(value, default=str)
    if len(text) > MAX_PARAM_VAL_LENGTH:  # MLflow rejects longer values; keep a visible marker
        text = text[: MAX_PARAM_VAL_LENGTH - 3] + "..."
    return text


def logged_params(params: dict) -> dict[str, str]:
    """Params as MLflow holds them once logged: keys cut to MLflow's limit, values as text."""
    return {key[:MAX_ENTITY_KEY_LENGTH]: _param_value(value) for key, value in params.items()}


def _tag_value(value) -> str:
    return str(value)[:MAX_TAG_VAL_LENGTH]


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _is_number(value) -> bool:
    """Python and numpy scalars (bools count as 0/1), except NaN."""
    return isinstance(value, numbers.Real) and not math.isnan(float(value))


def artifact_root(tracking_uri: str) -> str | None:
    """Artifacts of a SQLite store go beside the database, not into the current directory."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    database = Path(tracking_uri[len(prefix):]).resolve()
    return (database.parent / "mlartifacts").as_uri()


def find_experiment_id(client: MlflowClient, study_name: str, tracking_uri: str, create: bool) -> str:
    """The study's experiment; trials and the report only look it up, the driver creates it."""
    experiment = client.get_experiment_by_name(study_name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    if not create:
        raise ValueError(f"no MLflow experiment named {study_name!r} at {tracking_uri}; "
                         "start the study first or pass the tracking URI the study used")
    return client.create_experiment(study_name, artifact_location=artifact_root(tracking_uri))


def close_trial_run(tracking_uri: str, parent_run_id: str, trial_id: str, *, status: str, tags: dict,
                    only_running: bool = False) -> bool:
    """Set the status (and why-tags) of the child run of Ray trial ``trial_id``; False when there is none
    (a trial that failed before opening its run) or, with ``only_running``, when it is already closed."""
    client = MlflowClient(tracking_uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}' and tags.trial_id = '{trial_id}'",
        max_results=1)
    if not runs or (only_running and runs[0].info.status != "RUNNING"):
        return False
    _log_params_and_tags(client, runs[0].info.run_id, {}, tags, existing={})
    client.set_terminated(runs[0].info.run_id, status=status)
    return True


class StudyTracker:
    """Driver side: the experiment and the parent run of one study."""

    def __init__(self, tracking_uri: str, study_name: str):
        self.tracking_uri = tracking_uri
        self.study_name = study_name
        self.client = MlflowClient(tracking_uri)
        self.run_id: str | None = None

    def start(self, space_dict: dict, cli_args: dict, resume: bool) -> str:
        """Parent run id. Resuming reuses the latest parent run of the study; a fresh start opens a new one
        (an earlier attempt stays in the store, and the report reads the latest parent)."""
        experiment_id = find_experiment_id(self.client, self.study_name, self.tracking_uri, create=True)
        parents = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{TAG_ROLE}` = 'parent'", order_by=["attributes.start_time DESC"],
            max_results=1)
        if resume and parents:
            note = close_dead_parent(self.client, parents[0])
            if note:
                print(note, flush=True)
            self.run_id = parents[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            self.client.set_tag(self.run_id, TAG_DRIVER, driver_identity())
            _delete_tags(self.client, self.run_id, self.client.get_run(self.run_id).data.tags, END_TAGS)
            # Trials that failed deterministically are tried again: --resume is how a fixed cause is retried.
            for child in self.client.search_runs(
                    [experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{self.run_id}' and tags.{TAG_RETRY} = 'no'"):
                self.client.delete_tag(child.info.run_id, TAG_RETRY)
            return self.run_id
        description = space_dict.get("description") or ""
        if description:  # shown by the MLflow UI on the experiment's and the run's page
            self.client.set_experiment_tag(experiment_id, NOTE, description)
        run = self.client.create_run(experiment_id, run_name=self.study_name, tags={
            TAG_STUDY: self.study_name, TAG_ROLE: "parent", TAG_DRIVER: driver_identity(), NOTE: description})
        self.run_id = run.info.run_id
        params = {f"space.{k}": v for k, v in flatten(space_dict).items()}
        params.update({f"cli.{k}": v for k, v in flatten(cli_args).items()})
        tags = {"git_commit": git_commit() or "unknown"}
        _log_params_and_tags(self.client, self.run_id, params, tags, existing={})
        # argparse values may be Paths: stored as their text
        self.client.log_dict(self.run_id, json.loads(json.dumps(space_dict, default=str)), "search_space.json")
        self.client.log_dict(self.run_id, json.loads(json.dumps(cli_args, default=str)), "cli_args.json")
        return self.run_id

    def finish(self, status: str = "FINISHED", metrics: dict | None = None) -> None:
        """Close the parent run; ``metrics`` (e.g. the study's wall time) are logged on it first."""
        if self.run_id is None:
            raise RuntimeError("StudyTracker.finish() called before start(); call start() first")
        timestamp = int(time.time() * 1000)
        entries = [Metric(key, float(value), timestamp, 0) for key, value in (metrics or {}).items()
                   if _is_number(value)]
        if entries:
            self.client.log_batch(self.run_id, metrics=entries)
        self.client.set_terminated(self.run_id, status=status)


    def close_open_trials(self, status: str = "KILLED") -> int:
        """Mark child runs still RUNNING as ``status`` (tagged ``stop_reason=interrupted``); returns how many.

        Once ``fit`` returned, such a run belongs to a trial Ray stopped because the study was interrupted: a
        trial closes its own run, and TrialOutcome the ones a scheduler or stopper ended. A resumed trial
        reopens its run (``TrialTracker.start``), so this loses nothing.
        """
        if self.run_id is None:
            raise RuntimeError("StudyTracker.close_open_trials() called before start(); call start() first")
        experiment_id = self.client.get_run(self.run_id).info.experiment_id
        open_runs = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_PARENT}` = '{self.run_id}' and attributes.status = 'RUNNING'")
        for run in open_runs:
            self.client.set_tag(run.info.run_id, "stop_reason", "interrupted")
            self.client.set_terminated(run.info.run_id, status=status)
        return len(open_runs)

    def log_report(self, folder: Path) -> None:
        """The study's report (tables, CSVs, plots) as artifacts of the parent run, under ``report/``."""
        if self.run_id is None:
            raise RuntimeError("StudyTracker.log_report() called before start(); call start() first")
        self.client.log_artifacts(self.run_id, str(folder), artifact_path="report")


class TrialTracker:
    """Inside a trial process: the nested child run of one trial."""

    def __init__(self, tracking_uri: str, parent_run_id: str, trial_name: str, study_name: str):
        self.tracking_uri = tracking_uri
        self.parent_run_id = parent_run_id
        self.trial_name = trial_name
        self.study_name = study_name
        self.client = MlflowClient(tracking_uri)
        self.run_id: str | None = None
        self.previous_tags: dict = {}  # of the run as an earlier attempt of this trial left it
        self._logged_cycles: set[int] = set()

    def start(self, params: dict, tags: dict, run_name: str | None = None) -> None:
        """Open the child run (named ``run_name``, default the trial name), or continue the one this trial
        opened before a restart."""
        experiment_id = find_experiment_id(self.client, self.study_name, self.tracking_uri, create=False)
        if "'" in self.trial_name:
            raise ValueError(f"trial name {self.trial_name!r} contains a quote, which MLflow search filters "
                             "cannot match; name trials without quotes")
        existing = self.client.search_runs(
            [experiment_id],
            filter_string=(f"tags.`{TAG_PARENT}` = '{self.parent_run_id}' "
                           f"and tags.`{TAG_TRIAL}` = '{self.trial_name}'"),
            order_by=["attributes.start_time ASC"], max_results=1)
        if existing:
            run = existing[0]
            self.run_id = run.info.run_id
            self.previous_tags = dict(run.data.tags)
            self.client.update_run(self.run_id, status="RUNNING")
            # A restarted attempt: how the last one ended is history, not this run's outcome.
            if "error" in self.previous_tags:
                self.client.set_tag(self.run_id, "retried_after", self.previous_tags["error"])
            _delete_tags(self.client, self.run_id, self.previous_tags, END_TAGS)
            logged_params = run.data.params
            self._logged_cycles = {int(m.step) for m in self.client.get_metric_history(self.run_id, "cycle")}
        else:
            run = self.client.create_run(experiment_id, run_name=run_name or self.trial_name, tags={
                TAG_PARENT: self.parent_run_id, TAG_TRIAL: self.trial_name, TAG_STUDY: self.study_name,
                TAG_ROLE: "trial", "git_commit": git_commit() or "unknown"})
            self.run_id = run.info.run_id
            logged_params = {}
        _log_params_and_tags(self.client, self._run(), flatten(params), tags, existing=logged_params)

    def log_cycle(self, metrics: dict) -> None:
        """All numeric metrics of one cycle at step = cycle; NaN (e.g. ULA keys at cycle 0) is skipped. Each must
        be one reidmodel.cycle_metrics declares, so the report finds it under the name and format it expects.

        A cycle this run already holds is not logged again: a trial killed after logging a cycle but before
        Ray stored its checkpoint redoes that cycle on resume, and MLflow cannot replace a logged point.
        """
        if "cycle" not in metrics:
            raise ValueError(f"cycle metrics need a 'cycle' key to use as the MLflow step; got {sorted(metrics)}")
        unknown = [key for key, value in metrics.items() if _is_number(value) and key not in METRICS]
        if unknown:
            raise ValueError(f"cycle metric {unknown[0]!r} is not declared in reidmodel.cycle_metrics: "
                             + suggest(unknown[0], METRICS, otherwise="add it to METRICS there"))
        step = int(metrics["cycle"])
        if step in self._logged_cycles:
            return
        timestamp = int(time.time() * 1000)
        entries = [Metric(key, float(value), timestamp, step) for key, value in metrics.items()
                   if _is_number(value)]
        for chunk in _chunks(entries, MAX_METRICS_PER_BATCH):
            self.client.log_batch(self._run(), metrics=chunk)
        self._logged_cycles.add(step)

    def log_history(self, history_csv: Path) -> None:
        """Per-epoch losses as ``epoch_<column>`` at step = row number (the global epoch).

        The number of rows already logged is kept in a tag, so calling this again after every cycle (and
        after a restart, when history.csv comes back from the checkpoint) logs only the new rows.
        """
        history_csv = Path(history_csv)
        if not history_csv.is_file():
            raise FileNotFoundError(f"no training history at {history_csv}; pass the history.csv of the "
                                    "checkpoint folder the pipeline reported")
        with open(history_csv, newline="") as f:
            rows = list(csv.DictReader(f))
        run = self.client.get_run(self._run())
        done = int(run.data.tags.get(TAG_HISTORY_ROWS, 0))
        if len(rows) <= done:
            return
        timestamp = int(time.time() * 1000)
        entries = []
        for step, row in enumerate(rows[done:], start=done):
            for column, text in row.items():
                if column in HISTORY_INDEX_COLUMNS or text in (None, ""):
                    continue
                try:
                    value = float(text)
                except ValueError:
                    continue
                if not math.isnan(value):
                    entries.append(Metric(f"{HISTORY_PREFIX}{column}", value, timestamp, step))
        for chunk in _chunks(entries, MAX_METRICS_PER_BATCH):
            self.client.log_batch(self._run(), metrics=chunk)
        self.client.set_tag(self._run(), TAG_HISTORY_ROWS, str(len(rows)))

    def log_artifacts(self, paths: list[Path]) -> None:
        """Files go to the artifact root, folders keep their name; re-logging a file overwrites it."""
        for path in map(Path, paths):
            if path.is_dir():
                self.client.log_artifacts(self._run(), str(path), artifact_path=path.name)
            elif path.is_file():
                self.client.log_artifact(self._run(), str(path))
            else:
                raise FileNotFoundError(f"artifact {path} does not exist; log it after the pipeline wrote it")

    def tag(self, tags: dict) -> None:
        _log_params_and_tags(self.client, self._run(), {}, tags, existing={})

    def end(self, status: str = "FINISHED", tags: dict | None = None) -> None:
        """Close the run; ``tags`` say why when it did not finish (``stop_reason``, ``error``)."""
        _log_params_and_tags(self.client, self._run(), {}, tags or {}, existing={})
        self.client.set_terminated(self._run(), status=status)

    def _run(self) -> str:
        if self.run_id is None:
            raise RuntimeError(f"trial {self.trial_name!r}: call TrialTracker.start() before logging")
        return self.run_id


def _delete_tags(client: MlflowClient, run_id: str, present: dict, keys: tuple[str, ...]) -> None:
    for key in keys:
        if key in present:
            client.delete_tag(run_id, key)


def _log_params_and_tags(client: MlflowClient, run_id: str, params: dict, tags: dict, existing: dict) -> None:
    """MLflow refuses to change a logged param, so on resume only params not logged yet are sent."""
    param_entries = [Param(key[:MAX_ENTITY_KEY_LENGTH], _param_value(value)) for key, value in params.items()
                     if key[:MAX_ENTITY_KEY_LENGTH] not in existing]
    tag_entries = [RunTag(key[:MAX_ENTITY_KEY_LENGTH], _tag_value(value)) for key, value in tags.items()
                   if value is not None]
    for chunk in _chunks(param_entries, MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=chunk)
    for chunk in _chunks(tag_entries, MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, tags=chunk)

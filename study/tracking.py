"""MLflow bookkeeping of a study, all of it on the driver: one experiment per study, one parent run, one nested
child run per trial.

Trials never talk to MLflow. They ``tune.report`` their cycles, and ``TrialLogger``, a Ray Tune LoggerCallback
on the same hooks as Ray's own MLflowLoggerCallback, turns each trial's start, results, checkpoints and end into
its child run. So worker nodes need no tracking URI, and a run's final status is Ray's own decision about the
trial (finished, stopped by the scheduler, failed after its retries). Everything goes through
``MlflowClient`` with explicit run ids, never the fluent API's global active run. Runs are found again by tags,
so a resumed study continues its parent and child runs instead of duplicating them.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import pickle
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

# Nothing of ours talks to the outside by default: MLflow 3 would otherwise send usage telemetry.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Reports read small artifacts (the space, a trial's config.yaml): no progress bars on stderr.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.utils.git_utils import get_git_commit  # noqa: E402
from mlflow.utils.validation import (  # noqa: E402
    MAX_ENTITY_KEY_LENGTH,
    MAX_PARAM_VAL_LENGTH,
    MAX_TAG_VAL_LENGTH,
)
from ray.tune.logger import LoggerCallback  # noqa: E402

from reidmodel.checkpoint import CYCLES, HISTORY, read_csv  # noqa: E402
from reidmodel.config import flatten, to_yaml  # noqa: E402
from reidmodel.cycle_metrics import METRICS  # noqa: E402
from study.outcome import INTERRUPTED, is_deterministic, one_line  # noqa: E402
from study.paths import ARTIFACTS_DIR, NOTE  # noqa: E402
from study.trial import TrialConfigs, trial_label, trial_outcome, trial_tags  # noqa: E402

# Tags that identify the runs of a study; the report reads them too.
TAG_STUDY = "study"
TAG_ROLE = "study.role"  # "parent" or "trial"
TAG_TRIAL = "trial_name"
TAG_TRIAL_ID = "trial_id"
TAG_PARENT = "mlflow.parentRunId"
TAG_DRIVER = "driver"  # HOST:PID of the driver of the latest sitting
TAG_RETRY = "retry"  # "no" on a trial run that failed deterministically (Ray's retry of it refused at once)
END_TAGS = ("error", "error_kind", "stop_reason", "stopped_at_cycle", TAG_RETRY)  # dropped when a run restarts
# Text a trial reports with its cycles, kept as run tags; ``machine`` is where it computed (CPU and kernels or
# GPU, threads, torch), since the same seed gives other numbers elsewhere.
RESULT_TAGS = ("pretrain_cache", "pretrain_key", "machine")
HISTORY_PREFIX = "epoch_"  # per-epoch metrics from history.csv, kept apart from the per-cycle ones
HISTORY_INDEX_COLUMNS = ("stage", "cycle", "epoch")
TRIAL_FILES = (CYCLES, HISTORY)  # of a trial's checkpoint, logged as artifacts (config.yaml at its start)


def git_commit() -> str | None:
    """Commit of the checkout this code runs from; None outside a git checkout (an installed wheel)."""
    return get_git_commit(str(Path(__file__).resolve().parent))


def artifact_root(tracking_uri: str) -> str | None:
    """Artifacts of a SQLite store go beside the database, not into the current directory."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    return (Path(tracking_uri[len(prefix):]).resolve().parent / ARTIFACTS_DIR).as_uri()


def find_experiment_id(client: MlflowClient, study_name: str, tracking_uri: str, create: bool) -> str:
    """The study's experiment; the report only looks it up, the driver creates it."""
    experiment = client.get_experiment_by_name(study_name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    if not create:
        raise ValueError(f"no MLflow experiment named {study_name!r} at {tracking_uri}; "
                         "start the study first or pass the tracking URI the study used")
    return client.create_experiment(study_name, artifact_location=artifact_root(tracking_uri))


def latest_parent(client: MlflowClient, experiment_id: str):
    parents = client.search_runs([experiment_id], filter_string=f"tags.`{TAG_ROLE}` = 'parent'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    return parents[0] if parents else None


def logged_space(client: MlflowClient, parent) -> dict:
    """The space a study ran, whole, as its parent run logged it at the first start (search_space.json); {} for a
    parent run from before spaces were logged."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = client.download_artifacts(parent.info.run_id, "search_space.json", folder)
        except MlflowException:
            return {}
        return json.loads(Path(path).read_text())


def close_open_children(client: MlflowClient, parent, reason: str) -> int:
    """Mark the parent's trial runs still RUNNING as KILLED with ``stop_reason``; returns how many."""
    open_runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{TAG_PARENT}` = '{parent.info.run_id}' and attributes.status = 'RUNNING'")
    for run in open_runs:
        client.set_tag(run.info.run_id, "stop_reason", reason)
        client.set_terminated(run.info.run_id, status="KILLED")
    return len(open_runs)


def close_dead_parent(client: MlflowClient, parent) -> str | None:
    """A parent run left RUNNING by a driver that is gone (its lock is free: the caller holds it now) is marked
    KILLED, its open trial runs too; returns a line saying so, or None when the parent is closed already."""
    if parent.info.status != "RUNNING":
        return None
    identity = parent.data.tags.get(TAG_DRIVER, "of an earlier sitting")
    closed = close_open_children(client, parent, INTERRUPTED)
    client.set_tag(parent.info.run_id, "stop_reason", f"driver {identity} died")
    client.set_terminated(parent.info.run_id, status="KILLED")
    return (f"parent run {parent.info.run_id} was still RUNNING but its driver ({identity}) is gone: marked KILLED "
            f"with {closed} open trial run(s)")


class StudyTracker:
    """The experiment and the parent run of one study."""

    def __init__(self, tracking_uri: str, study_name: str):
        self.tracking_uri = tracking_uri
        self.study_name = study_name
        self.client = MlflowClient(tracking_uri)
        self.run_id: str | None = None

    def start(self, space_dict: dict, cli_args: dict, resume: bool) -> str:
        """Parent run id. Resuming reuses the latest parent run of the study (closing what a driver killed outright
        left open: the caller holds the study's lock, so no other driver lives); a fresh start opens a new one
        (an earlier attempt stays in the store, and the report reads the latest parent)."""
        experiment_id = find_experiment_id(self.client, self.study_name, self.tracking_uri, create=True)
        parent = latest_parent(self.client, experiment_id)
        if resume and parent is not None:
            note = close_dead_parent(self.client, parent)
            if note:
                print(note, flush=True)
            self.run_id = parent.info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            _delete_tags(self.client, self.run_id, self.client.get_run(self.run_id).data.tags, END_TAGS)
            self.client.set_tag(self.run_id, TAG_DRIVER, f"{socket.gethostname()}:{os.getpid()}")
            return self.run_id
        description = space_dict.get("description") or ""
        if description:  # shown by the MLflow UI on the experiment's and the run's page
            self.client.set_experiment_tag(experiment_id, NOTE, description)
        run = self.client.create_run(experiment_id, run_name=self.study_name, tags={
            TAG_STUDY: self.study_name, TAG_ROLE: "parent", NOTE: description,
            TAG_DRIVER: f"{socket.gethostname()}:{os.getpid()}"})
        self.run_id = run.info.run_id
        params = {f"space.{k}": v for k, v in flatten(space_dict).items()}
        params.update({f"cli.{k}": v for k, v in flatten(cli_args).items()})
        log_params_and_tags(self.client, self.run_id, params, {"git_commit": git_commit() or "unknown"})
        # argparse values may be Paths: stored as their text
        self.client.log_dict(self.run_id, json.loads(json.dumps(space_dict, default=str)), "search_space.json")
        self.client.log_dict(self.run_id, json.loads(json.dumps(cli_args, default=str)), "cli_args.json")
        return self.run_id

    def close_unfinished_trials(self) -> int:
        """Once Ray returned, a trial run still RUNNING belongs to a trial the study's end left unfinished
        (Ctrl-C, SIGTERM, an error of the driver): KILLED, ``stop_reason=interrupted``. A resumed trial reopens it."""
        return close_open_children(self.client, self.client.get_run(self._run()), INTERRUPTED)

    def trial_runs(self) -> list:
        """The child runs of this sitting's parent run."""
        experiment_id = self.client.get_run(self._run()).info.experiment_id
        return self.client.search_runs([experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{self._run()}'")

    def finish(self, status: str = "FINISHED", metrics: dict | None = None) -> None:
        """Close the parent run; ``metrics`` (e.g. the study's wall time) are logged on it first."""
        timestamp = int(time.time() * 1000)
        entries = [Metric(key, float(value), timestamp, 0) for key, value in (metrics or {}).items()
                   if _is_number(value)]
        if entries:
            self.client.log_batch(self._run(), metrics=entries)
        self.client.set_terminated(self._run(), status=status)

    def log_report(self, folder: Path) -> None:
        """The study's report (tables, CSVs, plots) as artifacts of the parent run, under ``report/``."""
        self.client.log_artifacts(self._run(), str(folder), artifact_path="report")

    def _run(self) -> str:
        if self.run_id is None:
            raise RuntimeError("StudyTracker: call start() before anything else")
        return self.run_id


class TrialLogger(LoggerCallback):
    """A trial's child run: opened (or reopened, for a retry or a resumed study) when Ray starts the trial, one
    step per reported cycle, the checkpoint's files and per-epoch losses at each checkpoint, closed with Ray's
    verdict. Saved with the study in tuner.pkl, so it holds plain values only (the client is made on use)."""

    def __init__(self, tracking_uri: str, parent_run_id: str, study_name: str, scheduler: str,
                 configs: TrialConfigs):
        self.tracking_uri = tracking_uri
        self.parent_run_id = parent_run_id
        self.study_name = study_name
        self.scheduler = scheduler
        self.configs = configs
        self._runs: dict[str, str] = {}  # trial id -> run id
        self._logged_cycles: dict[str, set[int]] = {}  # trial id -> the cycles its run holds

    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items()
                if key not in ("_runs", "_logged_cycles", "_client")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"configs": TrialConfigs(), **state, "_runs": {}, "_logged_cycles": {}})

    @property
    def client(self) -> MlflowClient:
        if "_client" not in self.__dict__:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def log_trial_start(self, trial) -> None:
        params = trial.config
        run = self._existing_run(trial.trial_id)
        if run is None:
            experiment_id = self.client.get_run(self.parent_run_id).info.experiment_id
            run = self.client.create_run(experiment_id, run_name=trial_label(params), tags={
                TAG_PARENT: self.parent_run_id, TAG_TRIAL: str(trial), TAG_TRIAL_ID: trial.trial_id,
                TAG_STUDY: self.study_name, TAG_ROLE: "trial", "git_commit": git_commit() or "unknown",
                **trial_tags(params)})
        else:  # a retried or resumed trial: how its last attempt ended is history, not this run's outcome
            self.client.update_run(run.info.run_id, status="RUNNING")
            if "error" in run.data.tags:
                self.client.set_tag(run.info.run_id, "retried_after", run.data.tags["error"])
            _delete_tags(self.client, run.info.run_id, run.data.tags, END_TAGS)
        self._runs[trial.trial_id] = run_id = run.info.run_id
        self._logged_cycles[trial.trial_id] = {int(m.step) for m in self.client.get_metric_history(run_id, "cycle")}
        config = self.configs.get(trial.trial_id, params)
        log_params_and_tags(self.client, run_id, config.flat(), {}, logged=run.data.params)
        self.client.log_text(run_id, to_yaml(config), "config.yaml")

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        """Ray retries the trial from its last checkpoint: its run says after which error."""
        self.client.set_tag(self._run_id(trial.trial_id), "retried_after", _error_line(trial))

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        """The cycle's registered metrics at step = cycle (NaN, e.g. ULA's at cycle 0, is skipped). A cycle the run
        holds already is not logged again: Ray's saved state can lag the results this logger saw (a driver
        interrupted or killed in between), and a trial restored from it redoes that cycle."""
        run_id = self._run_id(trial.trial_id)
        step = int(result["cycle"])
        logged = self._logged_cycles.setdefault(trial.trial_id, set())
        if step in logged:
            return
        logged.add(step)
        timestamp = int(time.time() * 1000)
        entries = [Metric(key, float(value), timestamp, step) for key, value in result.items()
                   if key in METRICS and _is_number(value)]
        self.client.log_batch(run_id, metrics=entries)  # MLflow's client splits it into batches it accepts
        log_params_and_tags(self.client, run_id, {}, {key: result[key] for key in RESULT_TAGS if key in result})

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint, **info) -> None:
        """The checkpoint's cycles.csv and history.csv as artifacts, and the epochs not logged yet as
        ``epoch_*`` metrics (counted from what the run holds, so a restarted trial logs each epoch once)."""
        run_id = self._run_id(trial.trial_id)
        with checkpoint.as_directory() as folder:
            for name in TRIAL_FILES:
                if (Path(folder) / name).is_file():
                    self.client.log_artifact(run_id, str(Path(folder) / name))
            rows = _read_rows(Path(folder) / HISTORY)
        logged = len(self.client.get_metric_history(run_id, f"{HISTORY_PREFIX}loss_total"))
        timestamp = int(time.time() * 1000)
        entries = [Metric(f"{HISTORY_PREFIX}{column}", value, timestamp, step)
                   for step, row in enumerate(rows) if step >= logged for column, value in row.items()]
        self.client.log_batch(run_id, metrics=entries)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        """FAILED with the trial's error once Ray gives up on it; otherwise FINISHED, or KILLED with who stopped
        it early (the scheduler, the degenerate-ULA stopper) and at which cycle."""
        if failed:
            status, tags = "FAILED", _failure_tags(trial)
        else:
            config = self.configs.get(trial.trial_id, trial.config)
            status, tags = trial_outcome(config, trial.last_result or {}, self.scheduler)
        run_id = self._run_id(trial.trial_id)
        log_params_and_tags(self.client, run_id, {}, tags)
        self.client.set_terminated(run_id, status=status)

    def _existing_run(self, trial_id: str):
        runs = self.client.search_runs(
            [self.client.get_run(self.parent_run_id).info.experiment_id],
            filter_string=f"tags.`{TAG_PARENT}` = '{self.parent_run_id}' and tags.{TAG_TRIAL_ID} = '{trial_id}'",
            order_by=["attributes.start_time ASC"], max_results=1)
        return runs[0] if runs else None

    def _run_id(self, trial_id: str) -> str:
        if trial_id not in self._runs:  # a callback restored from tuner.pkl by a resumed driver
            run = self._existing_run(trial_id)
            if run is None:
                raise LookupError(f"trial {trial_id} has no MLflow run under parent {self.parent_run_id}")
            self._runs[trial_id] = run.info.run_id
        return self._runs[trial_id]


def _trial_error(trial) -> BaseException | None:
    """The trial's own exception, or None for a process that died without one. Ray pickles what it caught (wrapped:
    the cause is the trial's) into the trial's folder on the driver before any callback runs; the copy in storage
    that ``Trial.get_pickled_error`` reads comes later. Ray's file, as trusted as the study's tuner.pkl."""
    path = trial.pickled_error_file
    if not path or not Path(path).is_file():
        return None
    error = pickle.loads(Path(path).read_bytes())
    return getattr(error, "cause", None) or error


def _error_line(trial) -> str:
    error = _trial_error(trial)
    if error is None:
        return f"the trial process died: see {trial.error_file or 'the Ray log'}"
    return one_line(error)


def _failure_tags(trial) -> dict[str, str]:
    error = _trial_error(trial)
    kind = "deterministic" if error is not None and is_deterministic(error) else "transient"
    return {"error": _error_line(trial), "error_kind": kind, **({TAG_RETRY: "no"} if kind == "deterministic" else {})}


def _read_rows(history_csv: Path) -> list[dict[str, float]]:
    """Per-epoch losses as the pipeline wrote them, the index columns and empty or NaN cells left out."""
    if not history_csv.is_file():
        return []
    return [{column: float(value) for column, value in row.items()
             if column not in HISTORY_INDEX_COLUMNS and _is_number(value)} for row in read_csv(history_csv)]


def _param_value(value) -> str:
    text = str(value) if isinstance(value, (str, Path)) else json.dumps(value, default=str)
    if len(text) > MAX_PARAM_VAL_LENGTH:  # MLflow rejects longer values; keep a visible marker
        text = text[: MAX_PARAM_VAL_LENGTH - 3] + "..."
    return text


def logged_params(params: dict) -> dict[str, str]:
    """Params as MLflow holds them once logged: keys cut to MLflow's limit, values as text."""
    return {key[:MAX_ENTITY_KEY_LENGTH]: _param_value(value) for key, value in params.items()}


def _is_number(value) -> bool:
    """Python and numpy scalars (bools count as 0/1), except NaN."""
    return isinstance(value, numbers.Real) and not math.isnan(float(value))


def _delete_tags(client: MlflowClient, run_id: str, present: dict, keys: tuple[str, ...]) -> None:
    for key in keys:
        if key in present:
            client.delete_tag(run_id, key)


def log_params_and_tags(client: MlflowClient, run_id: str, params: dict, tags: dict,
                        logged: dict | None = None) -> None:
    """MLflow refuses to change a logged param, so on resume only params not ``logged`` yet are sent."""
    logged = logged or {}
    param_entries = [Param(key, value) for key, value in logged_params(params).items() if key not in logged]
    tag_entries = [RunTag(key[:MAX_ENTITY_KEY_LENGTH], str(value)[:MAX_TAG_VAL_LENGTH]) for key, value in tags.items()
                   if value is not None]
    client.log_batch(run_id, params=param_entries, tags=tag_entries)

"""The Ray Tune function trainable: one (direction, variant or sampled params) experiment per trial.

Everything a trial needs travels in its ``params`` (the Tune config), so a restored study re-runs
unfinished trials with exactly the settings they started with.

Failures: the trial's MLflow run is opened first, so even a failure in pre-training is recorded (FAILED, with
an ``error`` tag). Ray Tune 2.60 retries every error alike (``FailureConfig.max_failures``), so a trial sorts
its own: a deterministic one (study.outcome.DETERMINISTIC_ERRORS: config, data, divergence) tags the run
``retry=no``, and Ray's retry of that trial stops at once on seeing the tag instead of paying for the same
error again; transient ones (OSError, CUDA, a killed process) are retried from the last cycle checkpoint.
``--resume`` clears the tag, which is how a fixed cause is tried again.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from ray import tune

from reidmodel.pipeline import pretrain_signature, pretrain_source, run_experiment
from study.cache import PretrainCache
from study.outcome import is_deterministic, one_line
from study.tracking import TAG_RETRY, TrialTracker, close_trial_run
from study.trial import TrialConfigs, TrialContext, trial_config, trial_label, trial_tags

# Test-only fault injection, read in _injected_fault alone and inert when unset (production never sets it).
FAULT_ENV = "REID_STUDY_TEST_FAULT"


class RetryRefused(ValueError):
    """Raised by Ray's retry of a trial that already failed deterministically: the same error again, for free."""


def train_trial(params: dict[str, Any]) -> None:
    context = TrialContext.of(params)
    config = trial_config(params)
    torch.set_num_threads(context.cpus_per_trial)
    tune_context = tune.get_context()
    tracker = TrialTracker(context.tracking_uri, context.parent_run_id, tune_context.get_trial_name(), context.name)
    tracker.start(config.flat(), {**trial_tags(params), "trial_id": tune_context.get_trial_id()},
                  run_name=trial_label(params))
    last: dict[str, Any] = {}
    try:
        if tracker.previous_tags.get(TAG_RETRY) == "no":
            raise RetryRefused(f"not retried, the same error would come back: {tracker.previous_tags.get('error')}")
        # Trials that share stage 1 (same data, model, loss, source schedule, seed) share its checkpoint.
        source_checkpoint, cache_hit = PretrainCache(Path(context.cache_dir)).get_or_train(
            pretrain_signature(config), lambda out_path: pretrain_source(config, out_path)
        )
        print(f"pre-training cache {'hit' if cache_hit else 'miss'}: {source_checkpoint.name}", flush=True)
        tracker.tag({"pretrain_cache": "hit" if cache_hit else "miss", "pretrain_key": source_checkpoint.stem})
        _adapt(config, tracker, source_checkpoint, last)
    except SystemExit:
        raise
    except BaseException as exc:
        kind = "deterministic" if is_deterministic(exc) else "transient"
        tracker.end("FAILED", {"error": one_line(exc), "error_kind": kind,
                               TAG_RETRY: "no" if kind == "deterministic" else None})
        raise
    tracker.end(*trial_outcome(config, last, scheduler=context.scheduler))


def _adapt(config, tracker: TrialTracker, source_checkpoint: Path, last: dict[str, Any]) -> None:
    """Stage 2 from the source checkpoint, or from the trial's last cycle checkpoint when Ray restarts it."""
    # The pipeline's working folder is scratch: Tune persists what is reported, and a folder inside the
    # trial directory would be synced to storage as an artifact, every cycle's checkpoint with it.
    with tempfile.TemporaryDirectory(prefix="reid-trial-") as scratch:
        workdir = Path(scratch)
        resume_from = None
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            resume_from = Path(checkpoint.to_directory(str(workdir / "resume")))

        def report(metrics: dict[str, float], checkpoint_dir: Path) -> None:
            _injected_fault(tracker.trial_name, int(metrics["cycle"]))
            # MLflow first: when a scheduler or stopper stops the trial, Ray ends it inside tune.report
            # (SystemExit) and kills the process soon after, so nothing after that call is sure to run. The
            # driver's TrialOutcome callback closes such runs. A kill between the two redoes the cycle on
            # resume, and log_cycle skips a step it already holds.
            tracker.log_cycle(metrics)
            tracker.log_history(Path(checkpoint_dir) / "history.csv")
            # The checkpoint folder holds the trial's config.yaml beside its per-cycle CSV.
            tracker.log_artifacts([Path(checkpoint_dir) / "cycles.csv", Path(checkpoint_dir) / "config.yaml"])
            last.update(metrics)
            tune.report(dict(metrics), checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

        run_experiment(config, report, workdir=workdir, source_checkpoint=source_checkpoint, resume_from=resume_from)


def _injected_fault(trial_name: str, cycle: int) -> None:
    """Test-only: with ``REID_STUDY_TEST_FAULT=KIND:CYCLE:LOG`` every trial appends ``<trial> <cycle>`` to LOG at
    each cycle's report and raises at CYCLE: KIND ``transient`` an OSError on the trial's first visit only,
    ``deterministic`` a ValueError every time. Unset (always, outside tests) it does nothing."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    kind, at, log = spec.split(":", 2)
    with open(log, "a") as handle:
        handle.write(f"{trial_name} {cycle}\n")
    if cycle != int(at):
        return
    visits = Path(log).read_text().splitlines().count(f"{trial_name} {cycle}")
    if kind == "deterministic":
        raise ValueError(f"injected deterministic fault at cycle {cycle}")
    if visits == 1:
        raise OSError(f"injected transient fault at cycle {cycle}")


def trial_outcome(config, last_metrics: dict[str, Any], scheduler: str) -> tuple[str, dict[str, Any]]:
    """MLflow status and tags of a trial that ended without error: FINISHED when it reached its last
    cycle, else KILLED with who stopped it (the degenerate-ULA rule, or the scheduler) and at which cycle."""
    cycle = int(last_metrics.get("cycle", -1))
    if cycle >= config.adapt.cycles:
        return "FINISHED", {}
    if last_metrics.get("ula_degenerate") == 1 and config.adapt.stop_on_degenerate:
        reason = "degenerate_ula"
    else:
        reason = scheduler if scheduler != "none" else "stopper"
    return "KILLED", {"stop_reason": reason, "stopped_at_cycle": cycle}


class _SharesConfigs:
    """The stopper and the outcome callback read each trial's config from one driver-side TrialConfigs."""

    configs: TrialConfigs

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A tuner.pkl saved before the configs were shared holds none: a resumed study gets its own.
        self.__dict__.update({"configs": TrialConfigs(), **state})


class TrialOutcome(_SharesConfigs, tune.Callback):
    """Closes the MLflow run of each trial from the driver, where Ray's decision is known for sure: a
    trial stopped inside ``tune.report`` is killed before its own code can."""

    def __init__(self, tracking_uri: str, parent_run_id: str, scheduler: str, configs: TrialConfigs):
        # Plain values and the configs, which pickle empty: the callback is saved with the study for --resume.
        self.tracking_uri = tracking_uri
        self.parent_run_id = parent_run_id
        self.scheduler = scheduler
        self.configs = configs

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        config = self.configs.get(trial.trial_id, trial.config)
        status, tags = trial_outcome(config, trial.last_result or {}, self.scheduler)
        close_trial_run(self.tracking_uri, self.parent_run_id, trial.trial_id, status=status, tags=tags)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        # The trial closes its own run as FAILED with its message; this catches a process that died.
        close_trial_run(self.tracking_uri, self.parent_run_id, trial.trial_id, status="FAILED",
                        tags={"error": f"the trial process died: see {trial.error_file or 'the Ray log'}"},
                        only_running=True)


class DegenerateULAStopper(_SharesConfigs, tune.Stopper):
    """Ends a trial whose clustering collapsed, when its config asks for it (``adapt.stop_on_degenerate``)."""

    def __init__(self, configs: TrialConfigs) -> None:
        self.configs = configs

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if result.get("ula_degenerate") != 1:
            return False
        return self.configs.get(trial_id, result["config"]).adapt.stop_on_degenerate

    def stop_all(self) -> bool:
        return False

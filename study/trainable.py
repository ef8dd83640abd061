"""The Ray Tune function trainable: one (direction, variant or sampled params) experiment per trial.

Everything a trial needs travels in its ``params`` (the Tune config), so a restored study re-runs unfinished
trials with exactly the settings they started with. A trial reads its checkpoint, runs its cycles and
``tune.report``s each one with its checkpoint; it never talks to MLflow (study.tracking.TrialLogger logs it on
the driver), so worker nodes need neither the tracking URI nor MLflow.

Failures: Ray Tune 2.60 retries every error alike (``FailureConfig.max_failures``), so a trial sorts its own. A
deterministic one (study.outcome.DETERMINISTIC_ERRORS: config, data, divergence) leaves a note in the trial's
folder naming this sitting's Ray job, and Ray's retry of that trial stops at once on reading it instead of paying
for the same error again; transient ones (OSError, CUDA, a killed process) are retried from the last cycle
checkpoint. ``--resume`` is a new Ray job, which is how a fixed cause is tried again.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from reidmodel.engine import machine_description, resolve_device
from reidmodel.pipeline import pretrain_signature, pretrain_source, run_experiment
from study.cache import PretrainCache
from study.outcome import is_deterministic, one_line
from study.trial import TrialConfigs, TrialContext, trial_config

# Test-only fault injection, read in _injected_fault alone and inert when unset (production never sets it).
FAULT_ENV = "REID_STUDY_TEST_FAULT"
FAILURE_NOTE = "deterministic_failure.txt"  # in the trial's folder: "<ray job id>\n<error line>"


class RetryRefused(ValueError):
    """Raised by Ray's retry of a trial that already failed deterministically: the same error again, for free."""


def train_trial(params: dict[str, Any]) -> None:
    context = TrialContext.of(params)
    config = trial_config(params)
    torch.set_num_threads(context.cpus_per_trial)
    note = Path(tune.get_context().get_trial_dir()) / FAILURE_NOTE
    job = ray.get_runtime_context().get_job_id()
    noted_job, _, noted_error = note.read_text().partition("\n") if note.is_file() else ("", "", "")
    if noted_job == job:
        raise RetryRefused(f"not retried, the same error would come back: {noted_error}")
    try:
        # Trials that share stage 1 (same data, model, loss, source schedule, seed) share its checkpoint.
        source_checkpoint, cache_hit = PretrainCache(Path(context.cache_dir)).get_or_train(
            pretrain_signature(config), lambda out_path: pretrain_source(config, out_path)
        )
        print(f"pre-training cache {'hit' if cache_hit else 'miss'}: {source_checkpoint.name}", flush=True)
        cache = {"pretrain_cache": "hit" if cache_hit else "miss", "pretrain_key": source_checkpoint.stem}
        _adapt(config, source_checkpoint, cache)
    except Exception as exc:
        if is_deterministic(exc):
            note.write_text(f"{job}\n{one_line(exc)}")
        raise


def _adapt(config, source_checkpoint: Path, cache: dict[str, str]) -> None:
    """Stage 2 from the source checkpoint, or from the trial's last cycle checkpoint when Ray restarts it. Each
    report carries the cache's verdict and the machine the cycle ran on (with the threads the pipeline set)."""
    # The pipeline's working folder is scratch: Tune persists what is reported, and a folder inside the
    # trial directory would be synced to storage as an artifact, every cycle's checkpoint with it.
    with tempfile.TemporaryDirectory(prefix="reid-trial-") as scratch:
        workdir = Path(scratch)
        resume_from = None
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            resume_from = Path(checkpoint.to_directory(str(workdir / "resume")))

        def report(metrics: dict[str, float], checkpoint_dir: Path) -> None:
            _injected_fault(tune.get_context().get_trial_name(), int(metrics["cycle"]))
            tags = {**cache, "machine": machine_description(resolve_device(config.runtime.device))}
            tune.report({**metrics, **tags}, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

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


class DegenerateULAStopper(tune.Stopper):
    """Ends a trial whose clustering collapsed, when its config asks for it (``adapt.stop_on_degenerate``)."""

    def __init__(self, configs: TrialConfigs) -> None:
        self.configs = configs

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A tuner.pkl saved before the configs were shared holds none: a resumed study gets its own.
        self.__dict__.update({"configs": TrialConfigs(), **state})

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if result.get("ula_degenerate") != 1:
            return False
        return self.configs.get(trial_id, result["config"]).adapt.stop_on_degenerate

    def stop_all(self) -> bool:
        return False

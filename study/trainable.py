"""The Ray Tune function trainable: one (direction, variant or sampled params) experiment per trial.

Everything a trial needs travels in its ``params`` (the Tune config), so a restored study re-runs
unfinished trials with exactly the settings they started with.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from ray import tune

from reidmodel.pipeline import pretrain_signature, pretrain_source, run_experiment
from study.cache import PretrainCache
from study.spaces import trial_config
from study.tracking import TrialTracker


def trial_tags(params: dict[str, Any]) -> dict[str, str]:
    study = params["study"]
    tags = {"study": study["name"], "space": study["space"], "direction": params["direction"]}
    if "variant" in params:
        tags.update(variant=params["variant"]["name"], table=str(params["variant"]["table"]))
    return tags


def train_trial(params: dict[str, Any]) -> None:
    study = params["study"]
    config = trial_config(params)
    torch.set_num_threads(study["cpus_per_trial"])
    context = tune.get_context()

    # Trials that share stage 1 (same data, model, loss, source schedule, seed) share its checkpoint.
    source_checkpoint, cache_hit = PretrainCache(Path(study["cache_dir"])).get_or_train(
        pretrain_signature(config), lambda out_path: pretrain_source(config, out_path)
    )
    print(f"pre-training cache {'hit' if cache_hit else 'miss'}: {source_checkpoint.name}", flush=True)
    tracker = TrialTracker(study["tracking_uri"], study["parent_run_id"], context.get_trial_name(), study["name"])
    tracker.start(config.flat(), {**trial_tags(params), "pretrain_cache": "hit" if cache_hit else "miss",
                                  "pretrain_key": source_checkpoint.stem})

    # The pipeline's working folder is scratch: Tune persists what is reported, and a folder inside the
    # trial directory would be synced to storage as an artifact, every cycle's checkpoint with it.
    with tempfile.TemporaryDirectory(prefix="reid-trial-") as scratch:
        workdir = Path(scratch)
        resume_from = None
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            resume_from = Path(checkpoint.to_directory(str(workdir / "resume")))
        last_checkpoint_dir: list[Path] = []

        def report(metrics: dict[str, float], checkpoint_dir: Path) -> None:
            # Checkpoint first: a trial stopped between the two redoes this cycle on resume and logs it once.
            tune.report(dict(metrics), checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))
            tracker.log_cycle(metrics)
            last_checkpoint_dir[:] = [Path(checkpoint_dir)]

        try:
            run_experiment(
                config, report, workdir=workdir, source_checkpoint=source_checkpoint, resume_from=resume_from
            )
        except BaseException:
            tracker.end("FAILED")
            raise
        if last_checkpoint_dir:
            folder = last_checkpoint_dir[0]
            tracker.log_history(folder / "history.csv")
            # Each checkpoint folder holds the trial's config.yaml beside its per-cycle CSV.
            tracker.log_artifacts([folder / "cycles.csv", folder / "config.yaml"])
    tracker.end("FINISHED")


class DegenerateULAStopper(tune.Stopper):
    """Ends a trial whose clustering collapsed, when its config asks for it (``adapt.stop_on_degenerate``)."""

    def __init__(self) -> None:
        self._stop_flags: dict[str, bool] = {}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if result.get("ula_degenerate") != 1:
            return False
        if trial_id not in self._stop_flags:
            self._stop_flags[trial_id] = trial_config(result["config"]).adapt.stop_on_degenerate
        return self._stop_flags[trial_id]

    def stop_all(self) -> bool:
        return False

"""One trial of a study: the settings it is given, its config, and how MLflow names and tags it.

A trial's Tune config (``params``) holds everything it needs, so a restored study re-runs an unfinished trial
with exactly the settings it started with: the study-wide TrialContext under ``study``, then ``direction``,
``seed``, a grid's ``variant`` (name and set) and a search's sampled dotted keys. The context travels as a plain
dict, the form Ray writes to params.json and pickles into tuner.pkl.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from reidmodel.config import ExperimentConfig, apply_overrides, preset
from study.paths import StudyPaths
from study.spaces import StudySpace, direction_overrides, table_column


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one study is given, beside its own direction, seed and variant or sampled values."""

    name: str  # the study's
    space: str
    preset: str
    fixed: dict[str, Any]  # the space's fixed overrides with --set and --data-root
    cache_dir: str
    cpus_per_trial: int
    scheduler: str

    @classmethod
    def for_study(cls, space: StudySpace, paths: StudyPaths) -> TrialContext:
        return cls(name=paths.name, space=space.name, preset=space.preset, fixed=space.fixed,
                   cache_dir=str(paths.cache_dir), cpus_per_trial=space.resources.cpus_per_trial,
                   scheduler=space.scheduler.type)

    @classmethod
    def of(cls, params: dict[str, Any]) -> TrialContext:
        # A study started by an older version may carry fields dropped since (its tracking URI): ignored.
        names = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in params["study"].items() if key in names})

    def as_param(self) -> dict[str, Any]:
        return asdict(self)


def trial_overrides(params: dict[str, Any]) -> dict[str, Any]:
    """fixed, then the direction and seed, then the grid variant's set, then the sampled dotted params."""
    overrides = dict(TrialContext.of(params).fixed)
    overrides.update(direction_overrides(params["direction"]))
    if "seed" in params:
        overrides["runtime.seed"] = params["seed"]
    if "variant" in params:
        overrides.update(params["variant"]["set"])
    overrides.update({key: value for key, value in params.items() if "." in key})
    return overrides


def trial_config(params: dict[str, Any]) -> ExperimentConfig:
    """The one way a trial's config is built: by the trial itself, and once per trial on the driver (TrialConfigs)."""
    return apply_overrides(preset(TrialContext.of(params).preset), trial_overrides(params))


class TrialConfigs:
    """The driver's config of each trial, built on first use: the stopper sees every result of every trial and the
    outcome callback each trial's end, so they share one of these rather than rebuilding a config per result.

    Tune pickles both into tuner.pkl; the configs are left out (a resumed driver rebuilds them from the trials'
    params), so a saved study never holds objects of a config class that may have changed since."""

    def __init__(self) -> None:
        self._configs: dict[str, ExperimentConfig] = {}

    def get(self, trial_id: str, params: dict[str, Any]) -> ExperimentConfig:
        if trial_id not in self._configs:
            self._configs[trial_id] = trial_config(params)
        return self._configs[trial_id]

    def __getstate__(self) -> dict[str, Any]:
        return {"_configs": {}}


def trial_label(params: dict[str, Any]) -> str:
    """What a trial is, for the MLflow runs table: variant or sampled values, paper column, seed."""
    what = params["variant"]["name"] if "variant" in params else ", ".join(
        f"{key.rsplit('.', 1)[-1]}={value:.3g}" if isinstance(value, float) else f"{key.rsplit('.', 1)[-1]}={value}"
        for key, value in sorted(params.items()) if "." in key)
    return f"{what} | {table_column(params['direction']) or params['direction']} | seed {params.get('seed', '?')}"


def trial_tags(params: dict[str, Any]) -> dict[str, str]:
    """The MLflow tags the report groups a trial's run by."""
    context = TrialContext.of(params)
    tags = {"study": context.name, "space": context.space, "direction": params["direction"],
            "seed": str(params.get("seed", ""))}
    if "variant" in params:
        tags["variant"] = params["variant"]["name"]
    return tags


def trial_outcome(config: ExperimentConfig, last_metrics: dict[str, Any], scheduler: str) -> tuple[str, dict[str, Any]]:
    """MLflow status and tags of a trial that ended without error: FINISHED when it reached its last cycle, else
    KILLED with who stopped it (the degenerate-ULA rule, or the scheduler) and at which cycle."""
    cycle = int(last_metrics.get("cycle", -1))
    if cycle >= config.adapt.cycles:
        return "FINISHED", {}
    if last_metrics.get("ula_degenerate") == 1 and config.adapt.stop_on_degenerate:
        reason = "degenerate_ula"
    else:
        reason = scheduler if scheduler != "none" else "stopper"
    return "KILLED", {"stop_reason": reason, "stopped_at_cycle": cycle}

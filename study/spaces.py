"""Search-space files: the schema of ``search_spaces/*.yaml``, validated before any trial starts.

A space is either a ``grid`` of named variants (the paper's ablation tables) or a ``search`` over
distributions (an Optuna study). Every key of the file is declared below with its type, range or choices,
default and help (reidmodel/schema.py turns a violation into one line naming the file and the dotted key);
every dotted config key is then checked by applying it to the space's base config, so a typo fails in a second
with the closest valid key rather than minutes into a Ray run.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator

from reidmodel.config import (
    PRESETS,
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    list_text,
    parse_overrides,
    preset,
    read_yaml,
)
from reidmodel.cycle_metrics import METRICS, label_free_metric_names
from reidmodel.data.synthetic import SYNTHETIC_DOMAINS
from reidmodel.messages import suggest
from reidmodel.schema import Int, Seed, Settings, Text, error_line, yaml_schema
from study.tables import COLUMNS, Tables, check_variants

# An installed wheel ships the spaces inside this package; a checkout keeps them at the top of the repository.
_PACKAGED_SPACES = Path(__file__).resolve().parent / "search_spaces"
SPACES_DIR = _PACKAGED_SPACES if _PACKAGED_SPACES.is_dir() else _PACKAGED_SPACES.parent.parent / "search_spaces"
REAL_DATASETS = ("market1501", "dukemtmc", "msmt17")
MARKET_LIKE = ("market1501", "synthetic_market")  # targets of the paper's D->M column
DEFAULT_DIRECTIONS = ("synthetic_duke->synthetic_market", "synthetic_market->synthetic_duke")
# The description is the MLflow experiment's note, whose tags MLflow refuses over this length
# (mlflow.utils.validation.MAX_EXPERIMENT_TAG_VAL_LENGTH; not imported: MLflow's import takes seconds).
DESCRIPTION_LIMIT = 20_000
Mode = Literal["max", "min"]
# What of the target's labels chose a study's settings, least first; each metric's registry entry
# (reidmodel.cycle_metrics: target_labels none / validation / oracle) says which it needs.
Selection = Literal["label_free", "validation", "oracle"]
SELECTIONS = get_args(Selection)
SELECTION_OF_LABELS = {"none": "label_free", "validation": "validation", "oracle": "oracle"}
# Overrides written as an empty key (``set:`` with nothing under it) are no overrides.
Overrides = Annotated[dict[str, Any], BeforeValidator(lambda value: {} if value is None else value)]


class SpaceError(ValueError):
    """A search-space problem, phrased as one line that names the file and the fix."""


class Variant(Settings):
    name: Text = Field(description="the row's name, unique; the MLflow variant tag the report keys tables on")
    set: Overrides = Field(default_factory=dict, description="dotted config overrides of this row: {kd.mu: 0.5}")


class Objective(Settings):
    metric: Text = Field(description="a per-cycle metric, e.g. target_mAP")
    mode: Mode = Field(description="max or min")


class StartPoint(Settings):
    name: Text = Field(description="the label the report marks this trial with")
    params: dict[str, Any] = Field(description="a value for every searched key")


class SearchSettings(Settings):
    sampler: Literal["tpe", "random", "cmaes", "nsgaii"] = Field("tpe", description="the Optuna sampler")
    num_samples: Int = Field(12, ge=1, description="trials the search runs")
    metric: Text = Field("target_mAP", description="the per-cycle metric optimised (objectives replace it)")
    mode: Mode = Field("max", description="max or min")
    objectives: list[Objective] = Field(default_factory=list, description="several objectives (tpe or nsgaii), "
                                                                          "replacing metric and mode")
    seed: Seed = Field(0, description="the sampler's seed")
    start_points: list[StartPoint] = Field(default_factory=list, description="settings evaluated before sampling "
                                                                             "starts, e.g. the paper default")

    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.objectives] or [self.metric]

    @property
    def modes(self) -> list[str]:
        return [o.mode for o in self.objectives] or [self.mode]

    @model_validator(mode="after")
    def _cmaes_has_one_objective(self) -> SearchSettings:
        if len(self.objectives) > 1 and self.sampler == "cmaes":
            raise ValueError("cmaes is single-objective: use nsgaii or tpe for several objectives")
        return self


class SchedulerSettings(Settings):
    type: Literal["asha", "none"] = Field("none", description="asha stops weak trials early (first objective)")
    grace_period: Int = Field(1, ge=1, description="reports before ASHA may stop a trial (report n: cycle n-1)")
    reduction_factor: Int = Field(2, ge=2, description="ASHA keeps 1 / reduction_factor of trials per rung")


class Resources(Settings):
    cpus_per_trial: Int = Field(1, ge=1, description="CPUs per trial (also its torch threads)")
    gpus_per_trial: Int | float = Field(0, ge=0, description="GPUs per trial (a fraction shares one)")
    max_concurrent: Int | None = Field(None, ge=1, description="trials at once; null: available CPUs // "
                                                               "cpus_per_trial")


class _Range(Settings):
    """A distribution between ``low`` and ``high``, both included."""

    def extremes(self) -> list[Any]:
        return [self.low, self.high]

    @model_validator(mode="after")
    def _ordered(self) -> _Range:
        if self.low > self.high:
            raise ValueError(f"low {self.low:g} > high {self.high:g}: swap them")
        return self


class ChoiceDistribution(Settings):
    """A categorical: the sampler draws one of the values (grid too: it is not exhaustive, use kind: grid)."""

    type: Literal["choice", "grid"] = Field(description="choice, or grid: a categorical the sampler draws from")
    values: list[Any] = Field(min_length=1, description="the values to draw from")

    def extremes(self) -> list[Any]:
        return self.values


class UniformDistribution(_Range):
    """A real number between low and high."""

    type: Literal["uniform"]
    low: float = Field(description="lowest value")
    high: float = Field(description="highest value")


class LogUniformDistribution(UniformDistribution):
    """A real number between low and high, drawn on a log scale."""

    type: Literal["loguniform"]
    low: float = Field(gt=0, description="lowest value (a log scale needs it > 0; use uniform otherwise)")


class IntDistribution(_Range):
    """A whole number between low and high, step apart."""

    type: Literal["int"]
    low: int = Field(description="lowest value")
    high: int = Field(description="highest value")
    step: int = Field(1, ge=1, description="spacing of the values")


Distribution = Annotated[ChoiceDistribution | UniformDistribution | LogUniformDistribution | IntDistribution,
                         Field(discriminator="type")]


class SpaceFile(Settings):
    """The keys of a space file (search_spaces/README.md shows one of each)."""

    name: Text | None = Field(None, description="default study name (--name overrides); null: the file's name")
    base: Text | None = Field(None, description="a space (name or path) whose keys this file starts from: each "
                                                "top-level key given here replaces the base's; name and "
                                                "description are never inherited")
    description: Text = Field("", max_length=DESCRIPTION_LIMIT,
                              description=f"free text of at most {DESCRIPTION_LIMIT:,} characters: the note of "
                              "the study's MLflow experiment and parent run")
    kind: Literal["grid", "search"] = Field("grid", description="grid: named variants; search: distributions "
                                                                "Optuna samples")
    selection: Selection = Field("label_free", description="what of the target's labels may choose this study's "
                                 "settings: label_free (none), validation (target_val_*: held-out labelled target "
                                 "ids), oracle (the test split or the true ids; its reports say so); a search or "
                                 "ASHA metric that reads more is refused")
    preset: Literal[tuple(PRESETS)] = Field("cpu", description="the reidmodel.config preset trials start from")
    fixed: Overrides = Field(default_factory=dict, description="dotted config overrides applied to every trial")
    directions: list[Text] = Field(default_factory=lambda: list(DEFAULT_DIRECTIONS), min_length=1,
                                   description="SRC->TGT dataset pairs; a search tunes one")
    seeds: list[Seed] | None = Field(None, min_length=1, description="runtime.seed of each repeat of every grid "
                                                                    "trial; null: the config's seed")
    variants: list[Variant] = Field(default_factory=list, description="kind: grid only; the rows of the grid")
    tables: Tables = Field(default_factory=list, description="kind: grid only; the tables the report builds")
    params: dict[str, Distribution] = Field(default_factory=dict, description="kind: search only; dotted config "
                                                                              "key -> distribution")
    search: SearchSettings = Field(default_factory=SearchSettings, description="the Optuna search")
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings, description="early stopping")
    resources: Resources = Field(default_factory=Resources, description="what each trial reserves")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None and len(set(seeds)) != len(seeds):
            raise ValueError("repeats a value: list each seed once")
        return seeds

    @field_validator("variants")
    @classmethod
    def _distinct_variants(cls, variants: list[Variant]) -> list[Variant]:
        for index, variant in enumerate(variants):
            for other in variants[:index]:
                if other.name == variant.name:
                    raise ValueError(f"variant name {variant.name!r} is used twice: names must be unique")
                if other.set == variant.set:
                    raise ValueError(f"variants {other.name!r} and {variant.name!r} set the same overrides: keep "
                                     "one and list it in every table that needs it")
        return variants

    @model_validator(mode="after")
    def _fits_its_kind(self) -> SpaceFile:
        if self.kind == "grid":
            problems = [(not self.variants, "a grid space needs a non-empty list of variants (name, set)"),
                        (self.params, "params belong to kind: search; a grid space lists variants")]
        else:
            problems = [
                (self.variants, "variants belong to kind: grid; a search space lists params"),
                (not self.params, "a search space needs params: a mapping of dotted key -> distribution"),
                (self.tables, "tables belong to kind: grid (a search reports its best trials instead)"),
                (len(self.directions) != 1, f"a search tunes one direction at a time, got "
                                            f"{len(self.directions)}: list one under directions or pass "
                                            "--directions SRC->TGT"),
                (self.seeds and len(self.seeds) > 1, f"a search samples on one seed, got {self.seeds}: confirm "
                                                     "its best trial on several seeds with python -m study.confirm"),
            ]
        for problem, message in problems:
            if problem:
                raise ValueError(message)
        return self

    @model_validator(mode="after")
    def _tables_name_variants(self) -> SpaceFile:
        check_variants(self.tables, [variant.name for variant in self.variants])
        return self

    @model_validator(mode="after")
    def _selection_covers_metrics(self) -> SpaceFile:
        """The target is unlabelled by definition: choosing on its labels must be declared, so that no report
        presents an oracle's pick as an unsupervised result."""
        needed = required_selection(self.model_dump())
        if SELECTIONS.index(needed[0]) > SELECTIONS.index(self.selection):
            name = needed[1]
            raise ValueError(f"search metric {name!r} reads target labels ({METRICS[name].target_labels}): declare "
                             f"selection: {needed[0]} in the space to choose on them (its reports say so), or "
                             "optimise a label-free metric: "
                             + ", ".join(n for n in label_free_metric_names() if METRICS[n].better is not None))
        return self

    @model_validator(mode="after")
    def _start_points_cover_params(self) -> SpaceFile:
        for index, point in enumerate(self.search.start_points):
            given, searched = set(point.params), set(self.params)
            if given != searched:
                raise ValueError(f"search.start_points[{index}]: give a value for every searched key (missing "
                                 f"{sorted(searched - given)}, not searched {sorted(given - searched)})")
        return self


class StudySpace(SpaceFile):
    """A space as it runs: the file's keys with the CLI's --directions and --seeds, --data-root and --set added
    to ``fixed``, the name and seeds filled in. Trials read it, the study's parent run logs its
    ``model_dump(mode="json")`` (search_space.json) and the report and study.confirm read that back."""

    name: Text = Field(description="the study's default name")
    seeds: list[Seed] = Field(min_length=1, description="runtime.seed of each repeat of every trial")
    path: Path = Field(description="the file it was read from")

    def base_config(self) -> ExperimentConfig:
        """Preset + fixed overrides: what every trial starts from."""
        return apply_overrides(preset(self.preset), self.fixed)

    def run_identity(self) -> dict[str, Any]:
        """What the trials run, as JSON: all but where and with how much (resources, the file's path), which a
        resumed study may change."""
        return self.model_dump(mode="json", exclude={"resources", "path"})

    def trials(self) -> list[dict[str, Any]]:
        """The grid's trials as (direction, variant, seed); a search has one entry per direction."""
        if self.kind == "search":
            return [{"direction": d, "seed": self.seeds[0]} for d in self.directions]
        return [
            {"direction": d, "variant": v.name, "seed": seed}
            for d, v, seed in itertools.product(self.directions, self.variants, self.seeds)
        ]


def load_space(
    name_or_path: str | Path,
    data_root: str | Path | None = None,
    directions: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    seeds: list[int] | None = None,
    preset_name: str | None = None,
) -> StudySpace:
    """Load and validate a space: a name of a file in ``search_spaces/`` or a path to a YAML file.

    ``data_root``, ``directions``, ``overrides``, ``seeds`` and ``preset_name`` (the CLI's --data-root,
    --directions, --set, --seeds and --preset) replace the file's ``data.root``, ``directions``, ``seeds`` and
    ``preset`` and extend ``fixed`` before validation, so a space is checked as it will run.
    """
    path = _find(name_or_path)
    given = _read_space(path)
    given.update({key: value for key, value in (("directions", directions), ("seeds", seeds),
                                                ("preset", preset_name)) if value})
    try:
        file = SpaceFile.model_validate(given)
    except ValidationError as exc:
        raise SpaceError(f"{path}: {error_line(exc, SpaceFile)}") from None
    fixed = dict(file.fixed)
    if data_root is not None:
        fixed["data.root"] = str(Path(data_root).expanduser().resolve())
    base = check_overrides(check_overrides(preset(file.preset), fixed, f"{path}: fixed"), overrides or {}, "--set")
    for direction in file.directions:
        parse_direction(direction, base.data.root, "--directions" if directions else f"{path}: directions")
    space = StudySpace.model_validate({**given, "name": file.name or path.stem, "path": path, "fixed": {
        **fixed, **(overrides or {})}, "seeds": file.seeds or [base.runtime.seed]})
    _check_configs(space)
    return space


def required_selection(space: dict[str, Any]) -> tuple[str, str | None]:
    """The least selection a space's metrics need, and the metric that needs it: a search chooses on all its
    metrics, ASHA stops trials on the first; a grid without ASHA chooses on none. Takes a space as a dict (a
    file's or a logged study's)."""
    search = SearchSettings.model_validate(space.get("search") or {})
    scheduled = (space.get("scheduler") or {}).get("type") == "asha"
    chosen_on = search.metrics if space.get("kind") == "search" else search.metrics[:1] if scheduled else []
    needed = [(SELECTION_OF_LABELS[METRICS[name].target_labels], name) for name in chosen_on if name in METRICS]
    return max(needed, key=lambda pair: SELECTIONS.index(pair[0]), default=("label_free", None))


def selection_of(space: dict[str, Any]) -> str:
    """A logged study's selection: as declared, or for a study logged before the key existed, what its metrics
    needed."""
    return space.get("selection") or required_selection(space)[0]


def available_spaces() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def parse_direction(direction: str, data_root: str | Path | None, where: str) -> tuple[str, str]:
    """``SRC->TGT`` -> (source, target), both names of datasets that can be loaded from data_root."""
    parts = [p.strip() for p in str(direction).split("->")]
    if len(parts) != 2 or not all(parts):
        # An unquoted a->b on a command line reaches us as 'a-': the shell took '>b' as a redirection.
        shell_ate_it = str(direction).endswith("-") and "->" not in str(direction)
        quote = ", and quote it: the shell reads an unquoted > as a redirection" if shell_ate_it else ""
        raise SpaceError(f"{where}: direction {direction!r} is not SRC->TGT: write e.g. "
                         f"'synthetic_duke->synthetic_market'{quote}")
    known = known_datasets(data_root)
    for name in parts:
        if data_root is None and name in REAL_DATASETS:
            raise SpaceError(f"{where}: {name} is real data: pass --data-root DIR, the folder holding it "
                             "(README.md, 'Reproduce the paper on real data')")
        if name not in known:
            if data_root is None:
                hint = f"use one of {', '.join(known)}, or pass --data-root DIR for {', '.join(REAL_DATASETS)}"
            else:
                hint = f"use one of {', '.join(known)} (the standard names and the folders under {data_root})"
            raise SpaceError(f"{where}: unknown dataset {name!r} in direction {direction!r}: {hint}")
    if parts[0] == parts[1]:
        raise SpaceError(f"{where}: direction {direction!r} adapts a dataset to itself: pick two different datasets")
    return parts[0], parts[1]


def known_datasets(data_root: str | Path | None) -> list[str]:
    """Without a root only the embedded synthetic benchmark exists; with one, its folders too."""
    if data_root is None:
        return list(SYNTHETIC_DOMAINS)
    root = Path(data_root).expanduser()
    folders = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    return list(dict.fromkeys([*REAL_DATASETS, *folders]))


def table_column(direction: str | None) -> str | None:
    """The paper's column: D->M is any direction into a Market-like target, M->D any other; None when the
    direction is malformed."""
    parts = [p.strip() for p in (direction or "").split("->")]
    if len(parts) != 2 or not all(parts):
        return None
    into_market, other = COLUMNS
    return into_market if parts[1] in MARKET_LIKE else other


def direction_overrides(direction: str) -> dict[str, str]:
    source, target = (p.strip() for p in direction.split("->"))
    return {"data.source": source, "data.target": target}


def check_overrides(base: ExperimentConfig, overrides: dict[str, Any], where: str) -> ExperimentConfig:
    """Apply overrides, turning a ConfigError into a SpaceError that says where the key was written."""
    try:
        return apply_overrides(base, overrides)
    except ConfigError as exc:
        raise SpaceError(f"{where}: {exc}") from exc


def parse_set_args(items: list[str]) -> dict[str, Any]:
    """``["ula.eps=0.8"]`` -> ``{"ula.eps": 0.8}``, parsed as ``reidmodel.train --set`` parses them."""
    try:
        return parse_overrides(items)
    except ConfigError as exc:
        raise SpaceError(str(exc)) from exc


def encode_choice(value: Any) -> Any:
    """Optuna's categorical values must be scalars: a list (attention stages) travels as 'conv3+conv4'."""
    return list_text(value) if isinstance(value, list) else value


def _read_space(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The file's keys laid over those of the space its ``base`` names (a paper-preset space reuses the synthetic
    ablation's variants and tables); an empty key is a key left out."""
    if path in chain:
        raise SpaceError(f"{path}: base spaces loop ({' -> '.join(str(p) for p in (*chain, path))}): break the "
                         "chain")
    try:
        raw = read_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise SpaceError(f"{path}: not valid YAML ({' '.join(str(exc).split())}): fix its syntax") from exc
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: must hold a mapping with keys {', '.join(SpaceFile.model_fields)}")
    given = {key: value for key, value in raw.items() if value is not None}
    if not isinstance(given.get("base"), str):
        return given
    inherited = _read_space(_find(given["base"]), (*chain, path))
    return {**{k: v for k, v in inherited.items() if k not in ("name", "description", "base")}, **given}


def _find(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        if not candidate.is_file():
            raise SpaceError(f"space file {candidate} does not exist: pass a YAML path or one of {available_spaces()}")
        return candidate
    named = SPACES_DIR / f"{name_or_path}.yaml"
    if not named.is_file():
        hint = suggest(name_or_path, available_spaces(),
                       otherwise=f"use one of {', '.join(available_spaces())} or a YAML path")
        raise SpaceError(f"unknown space {str(name_or_path)!r} (looked in {SPACES_DIR}): {hint}")
    return named


def _check_configs(space: StudySpace) -> None:
    """Every dotted key a trial may apply, applied to the base config: the variants, the ends or values of each
    distribution, the start points, and each grid trial's direction with its variant."""
    path, base = space.path, space.base_config()
    for index, variant in enumerate(space.variants):
        check_overrides(base, variant.set, f"{path}: variants[{index}] ({variant.name})")
    for key, dist in space.params.items():
        for value in dist.extremes():
            check_overrides(base, {key: value}, f"{path}: params.{key}")
    for index, point in enumerate(space.search.start_points):
        check_overrides(base, point.params, f"{path}: search.start_points[{index}]")
    for trial in space.trials():
        variant = next((v for v in space.variants if v.name == trial.get("variant")), None)
        trial_set = {**direction_overrides(trial["direction"]), **(variant.set if variant else {})}
        check_overrides(base, trial_set, f"{path}: {trial['direction']} {trial.get('variant', '')}".rstrip())


if __name__ == "__main__":
    print("\n".join(yaml_schema(SpaceFile)))  # search_spaces/README.md's schema block

"""Search-space files: the schema of ``search_spaces/*.yaml``, validated before any trial starts.

A space is either a ``grid`` of named variants (the paper's ablation tables) or a ``search`` over
distributions (an Optuna study). Every dotted key is checked by applying it to the space's base config,
so a typo fails in a second with the closest valid key rather than minutes into a Ray run.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reidmodel.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    list_text,
    parse_overrides,
    preset,
    read_yaml,
)
from reidmodel.data.synthetic import SYNTHETIC_DOMAINS
from reidmodel.messages import suggest
from study.tables import Table, TableError, parse_tables

# An installed wheel ships the spaces inside this package; a checkout keeps them at the top of the repository.
_PACKAGED_SPACES = Path(__file__).resolve().parent / "search_spaces"
SPACES_DIR = _PACKAGED_SPACES if _PACKAGED_SPACES.is_dir() else _PACKAGED_SPACES.parent.parent / "search_spaces"
REAL_DATASETS = ("market1501", "dukemtmc", "msmt17")
MARKET_LIKE = ("market1501", "synthetic_market")  # targets of the paper's D->M column
DEFAULT_DIRECTIONS = ("synthetic_duke->synthetic_market", "synthetic_market->synthetic_duke")
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "int", "grid")
SAMPLERS = ("tpe", "random", "cmaes", "nsgaii")
SCHEDULERS = ("asha", "none")
TOP_LEVEL_KEYS = (
    "name", "description", "kind", "preset", "fixed", "directions", "seeds",
    "variants", "tables", "params", "search", "scheduler", "resources",
)


class SpaceError(ValueError):
    """A search-space problem, phrased as one line that names the file and the fix."""


@dataclass
class Variant:
    name: str
    set: dict[str, Any]


@dataclass
class SearchSettings:
    sampler: str = "tpe"
    num_samples: int = 12
    metric: str = "target_mAP"
    mode: str = "max"
    # Multi-objective: [{metric: target_mAP, mode: max}, {metric: source_mAP, mode: max}]
    objectives: list[dict[str, str]] = field(default_factory=list)
    seed: int = 0
    # Settings evaluated before sampling starts, e.g. the paper default: [{name: ..., params: {key: value}}]
    start_points: list[dict[str, Any]] = field(default_factory=list)

    @property
    def metrics(self) -> list[str]:
        return [o["metric"] for o in self.objectives] or [self.metric]

    @property
    def modes(self) -> list[str]:
        return [o["mode"] for o in self.objectives] or [self.mode]


@dataclass
class SchedulerSettings:
    type: str = "none"
    grace_period: int = 1  # in reports, i.e. cycle + 1
    reduction_factor: int = 2


@dataclass
class Resources:
    cpus_per_trial: int = 1
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None  # None: available CPUs // cpus_per_trial


@dataclass
class StudySpace:
    name: str
    description: str
    kind: str  # "grid" | "search"
    preset: str
    fixed: dict[str, Any]
    directions: list[str]
    variants: list[Variant]
    params: dict[str, dict[str, Any]]
    search: SearchSettings
    scheduler: SchedulerSettings
    resources: Resources
    path: Path
    seeds: list[int] = field(default_factory=lambda: [0])  # runtime.seed of each repeat of every trial
    tables: list[Table] = field(default_factory=list)
    raw_tables: list[dict[str, Any]] = field(default_factory=list)  # as written, logged with the study

    def base_config(self) -> ExperimentConfig:
        """Preset + fixed overrides: what every trial starts from."""
        return apply_overrides(preset(self.preset), self.fixed)

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
) -> StudySpace:
    """Load and validate a space: a name of a file in ``search_spaces/`` or a path to a YAML file.

    ``data_root``, ``directions``, ``overrides`` and ``seeds`` (the CLI's --data-root, --directions, --set
    and --seeds) replace the file's ``data.root``, ``directions`` and ``seeds`` and extend ``fixed``
    before validation, so a space is checked as it will run.
    """
    path = _find(name_or_path)
    try:
        raw = read_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise SpaceError(f"{path}: not valid YAML ({' '.join(str(exc).split())}): fix its syntax") from exc
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: must hold a mapping with keys {', '.join(TOP_LEVEL_KEYS)}")
    space = _parse(raw, path, data_root, directions, overrides or {})
    space.seeds = _seeds(seeds if seeds is not None else raw.get("seeds"), space, path)
    return space


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
    return "D->M" if parts[1] in MARKET_LIKE else "M->D"


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


def _parse(
    raw: dict[str, Any],
    path: Path,
    data_root: str | Path | None,
    directions: list[str] | None,
    overrides: dict[str, Any],
) -> StudySpace:
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise SpaceError(f"{path}: unknown top-level key {key!r}: {suggest(key, TOP_LEVEL_KEYS)}")
    kind = raw.get("kind", "grid")
    if kind not in ("grid", "search"):
        raise SpaceError(f"{path}: kind {kind!r} is not allowed: use grid or search")
    preset_name = str(raw.get("preset", "cpu"))
    fixed = _mapping(raw.get("fixed"), path, "fixed")
    if data_root is not None:
        fixed["data.root"] = str(Path(data_root).expanduser().resolve())
    try:
        base = preset(preset_name)
    except ConfigError as exc:
        raise SpaceError(f"{path}: {exc}") from exc
    base = check_overrides(base, fixed, f"{path}: fixed")
    base = check_overrides(base, overrides, "--set")
    fixed.update(overrides)
    where = "--directions" if directions else f"{path}: directions"
    directions = [str(d) for d in directions or raw.get("directions") or DEFAULT_DIRECTIONS]
    for direction in directions:
        parse_direction(direction, base.data.root, where)
    space = StudySpace(
        name=str(raw.get("name", path.stem)),
        description=str(raw.get("description", "")),
        kind=kind,
        preset=preset_name,
        fixed=fixed,
        directions=directions,
        variants=_variants(raw.get("variants"), kind, base, path),
        params=_params(raw.get("params"), kind, base, path),
        search=_settings(SearchSettings, raw.get("search"), path, "search"),
        scheduler=_settings(SchedulerSettings, raw.get("scheduler"), path, "scheduler"),
        resources=_settings(Resources, raw.get("resources"), path, "resources"),
        path=path,
    )
    if raw.get("tables") and kind != "grid":
        raise SpaceError(f"{path}: tables belong to kind: grid (a search reports its best trials instead)")
    try:
        space.tables = parse_tables(raw.get("tables"), [v.name for v in space.variants])
    except TableError as exc:
        raise SpaceError(f"{path}: {exc}") from exc
    space.raw_tables = list(raw.get("tables") or [])
    _check_settings(space)
    for trial in space.trials():
        variant = next((v for v in space.variants if v.name == trial.get("variant")), None)
        trial_set = {**direction_overrides(trial["direction"]), **(variant.set if variant else {})}
        check_overrides(base, trial_set, f"{path}: {trial['direction']} {trial.get('variant', '')}".rstrip())
    return space


def _seeds(raw: Any, space: StudySpace, path: Path) -> list[int]:
    """A list of distinct seeds (default: the config's runtime.seed); a search samples on one seed."""
    if raw is None:
        return [space.base_config().runtime.seed]
    if not isinstance(raw, list) or not raw or not all(isinstance(s, int) and not isinstance(s, bool) for s in raw):
        raise SpaceError(f"{path}: seeds must be a non-empty list of integers, e.g. [0, 1, 2] (or --seeds 3)")
    if len(set(raw)) != len(raw):
        raise SpaceError(f"{path}: seeds {raw} repeat a value: list each seed once")
    if space.kind == "search" and len(raw) > 1:
        raise SpaceError(f"{path}: a search samples on one seed, got {raw}: confirm its best trial on several "
                         "seeds with python -m study.confirm")
    return list(raw)


def _mapping(value: Any, path: Path, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpaceError(f"{path}: {key} must be a mapping of dotted config keys, got {type(value).__name__}")
    return dict(value)


def _variants(raw: Any, kind: str, base: ExperimentConfig, path: Path) -> list[Variant]:
    if kind == "search":
        if raw:
            raise SpaceError(f"{path}: variants belong to kind: grid; a search space lists params")
        return []
    if not isinstance(raw, list) or not raw:
        raise SpaceError(f"{path}: a grid space needs a non-empty list of variants (name, set)")
    variants: list[Variant] = []
    for index, item in enumerate(raw):
        where = f"{path}: variants[{index}]"
        if not isinstance(item, dict) or "name" not in item:
            raise SpaceError(f"{where}: each variant is a mapping with name and set")
        unknown = set(item) - {"name", "set"}
        if unknown:
            raise SpaceError(f"{where}: unknown variant key(s) {sorted(unknown)}: use name and set "
                             "(a variant's tables are declared under tables)")
        variant = Variant(str(item["name"]), _mapping(item.get("set"), path, f"variants[{index}].set"))
        check_overrides(base, variant.set, f"{where} ({variant.name})")
        for other in variants:
            if other.name == variant.name:
                raise SpaceError(f"{where}: variant name {variant.name!r} is used twice: names must be unique")
            if other.set == variant.set:
                raise SpaceError(
                    f"{where}: variants {other.name!r} and {variant.name!r} set the same overrides: "
                    "keep one and list it in every table that needs it"
                )
        variants.append(variant)
    return variants


def _params(raw: Any, kind: str, base: ExperimentConfig, path: Path) -> dict[str, dict[str, Any]]:
    if kind == "grid":
        if raw:
            raise SpaceError(f"{path}: params belong to kind: search; a grid space lists variants")
        return {}
    if not isinstance(raw, dict) or not raw:
        raise SpaceError(f"{path}: a search space needs params: a mapping of dotted key -> distribution")
    params = {}
    for key, dist in raw.items():
        where = f"{path}: params.{key}"
        params[key] = _distribution(dist, where)
        for value in _probe_values(params[key]):
            check_overrides(base, {key: value}, where)
    return params


def _distribution(dist: Any, where: str) -> dict[str, Any]:
    if not isinstance(dist, dict) or "type" not in dist:
        raise SpaceError(f"{where}: a distribution is a mapping with type ({', '.join(DISTRIBUTIONS)})")
    kind = dist["type"]
    if kind not in DISTRIBUTIONS:
        raise SpaceError(f"{where}: unknown distribution {kind!r}: use one of {', '.join(DISTRIBUTIONS)}")
    expected = {"choice": {"values"}, "grid": {"values"}, "uniform": {"low", "high"},
                "loguniform": {"low", "high"}, "int": {"low", "high"}}[kind]
    allowed = expected | {"type"} | ({"step"} if kind == "int" else set())
    missing, extra = expected - set(dist), set(dist) - allowed
    if missing or extra:
        raise SpaceError(f"{where}: {kind} takes {', '.join(sorted(allowed - {'type'}))} (missing {sorted(missing)}, "
                         f"unexpected {sorted(extra)})")
    if kind in ("choice", "grid"):
        if not isinstance(dist["values"], list) or not dist["values"]:
            raise SpaceError(f"{where}: {kind} has no values: list at least one value")
        return dict(dist)
    low, high = dist["low"], dist["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise SpaceError(f"{where}: low and high must be numbers, got {low!r} and {high!r}")
    if low > high:
        raise SpaceError(f"{where}: low {low} > high {high}: swap them")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(f"{where}: loguniform needs low > 0, got {low}: use uniform or a positive low")
    if kind == "int":
        step = dist.get("step", 1)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high, step)) or step < 1:
            raise SpaceError(f"{where}: int needs integer low, high and step >= 1")
    return dict(dist)


def _probe_values(dist: dict[str, Any]) -> list[Any]:
    """Values that exercise a distribution's range when checked against the config."""
    if dist["type"] in ("choice", "grid"):
        return list(dist["values"])
    return [dist["low"], dist["high"]]


def _settings(cls: type, raw: Any, path: Path, key: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: {key} must be a mapping")
    names = list(cls.__dataclass_fields__)
    for name in raw:
        if name not in names:
            raise SpaceError(f"{path}: unknown key {key}.{name}: {suggest(name, names, prefix=key + '.')}")
    return cls(**raw)


def _check_settings(space: StudySpace) -> None:
    path, search, scheduler, resources = space.path, space.search, space.scheduler, space.resources
    if search.sampler not in SAMPLERS:
        raise SpaceError(f"{path}: search.sampler {search.sampler!r} is not allowed: use one of {', '.join(SAMPLERS)}")
    if not isinstance(search.num_samples, int) or search.num_samples < 1:
        raise SpaceError(f"{path}: search.num_samples must be an integer >= 1")
    for objective in search.objectives:
        if not isinstance(objective, dict) or set(objective) != {"metric", "mode"}:
            raise SpaceError(f"{path}: each search.objectives entry is {{metric: NAME, mode: max|min}}")
    if any(mode not in ("max", "min") for mode in search.modes):
        raise SpaceError(f"{path}: search mode must be max or min, got {search.modes}")
    if len(search.objectives) > 1 and search.sampler == "cmaes":
        raise SpaceError(f"{path}: cmaes is single-objective: use nsgaii or tpe for several objectives")
    if scheduler.type not in SCHEDULERS:
        raise SpaceError(f"{path}: scheduler.type {scheduler.type!r} is not allowed: use one of {', '.join(SCHEDULERS)}")
    if scheduler.grace_period < 1 or scheduler.reduction_factor < 2:
        raise SpaceError(f"{path}: scheduler needs grace_period >= 1 and reduction_factor >= 2")
    if resources.cpus_per_trial < 1 or resources.gpus_per_trial < 0:
        raise SpaceError(f"{path}: resources need cpus_per_trial >= 1 and gpus_per_trial >= 0")
    if resources.max_concurrent is not None and resources.max_concurrent < 1:
        raise SpaceError(f"{path}: resources.max_concurrent must be >= 1 (or left out for CPUs // cpus_per_trial)")
    for index, point in enumerate(search.start_points):
        where = f"{path}: search.start_points[{index}]"
        if not isinstance(point, dict) or set(point) != {"name", "params"} or not isinstance(point["params"], dict):
            raise SpaceError(f"{where}: write it as {{name: NAME, params: {{key: value, ...}}}}")
        if set(point["params"]) != set(space.params):
            missing, extra = sorted(set(space.params) - set(point["params"])), sorted(set(point["params"]) - set(space.params))
            raise SpaceError(f"{where}: give a value for every searched key (missing {missing}, not searched {extra})")
        check_overrides(space.base_config(), point["params"], where)
    if space.kind == "search" and len(space.directions) != 1:
        raise SpaceError(
            f"{path}: a search tunes one direction at a time, got {len(space.directions)}: "
            "list one under directions or pass --directions SRC->TGT"
        )

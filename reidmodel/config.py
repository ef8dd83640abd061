"""One typed configuration for an experiment, with the paper's defaults and a CPU preset.

The dataclass defaults are the paper's setting (docs/method.md sections 3-8). ``preset("cpu")`` is the
scaled-down setting the synthetic benchmark is calibrated for. YAML files and ``--set key=value``
overrides are validated on load: an unknown key names the closest valid one, a wrong type or an
out-of-range value names the field.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from reidmodel.messages import one_line, suggest

ATTENTION_STAGES = ("conv3", "conv4", "conv5")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load`` that also reads YAML 1.2 / Python floats (``1e-5``, ``1.0e5``): YAML 1.1 wants a dot
    and a signed exponent, so a learning rate written as ``1e-5`` would otherwise be the string '1e-5'."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def list_text(values: list) -> str:
    """The one text form of a list setting (attention stages): 'conv3+conv4', as MLflow params, Optuna's
    categorical values and report cells carry it; ``_coerce`` reads it back (',' works too)."""
    return "+".join(map(str, values))


class ConfigError(ValueError):
    """A configuration problem, phrased as one line that names the field and the fix."""


@dataclass
class DataConfig:
    # None: the embedded synthetic benchmark (generated on first use into synthetic_cache).
    root: str | None = None
    # Dataset names: market1501, dukemtmc, msmt17, synthetic_market, synthetic_duke, or the name of
    # any Market-layout folder under root.
    source: str = "dukemtmc"
    target: str = "market1501"
    height: int = 256
    width: int = 128
    batch_size: int = 64
    num_instances: int = 4  # K of the P x K identity sampler
    workers: int = 4
    # Decode every image once and keep the uint8 tensors in memory (small datasets).
    in_memory: bool = False
    flip_prob: float = 0.5
    pad: int = 10
    color_jitter: float = 0.2  # brightness/contrast/saturation strength; 0 disables it
    random_erasing_prob: float = 0.5
    synthetic_cache: str = "~/.cache/reid-study/synthetic"
    synthetic_ids: int = 120  # training identities per synthetic domain
    synthetic_seed: int = 0


@dataclass
class ModelConfig:
    backbone: Literal["resnet18", "resnet34", "resnet50", "resnet10"] = "resnet50"
    pretrained: str = "imagenet"  # imagenet | none | PATH to a torchvision state dict
    last_stride: int = 1
    attention: list[str] = field(default_factory=lambda: list(ATTENTION_STAGES))
    attention_reduction: int = 16
    bnneck: bool = True


@dataclass
class LossConfig:
    label_smoothing: float = 0.1
    triplet_margin: float = 0.3
    center_weight: float = 0.0035  # beta
    center_lr: float = 0.5


@dataclass
class SourceConfig:
    """Stage 1: supervised pre-training on the labelled source domain."""

    epochs: int = 120
    # The paper prints 3.5e-5; the strong baseline it builds on uses 3.5e-4 (see docs/method.md section 8).
    lr: float = 3.5e-5
    weight_decay: float = 5e-4
    step_size: int = 50
    gamma: float = 0.1
    warmup_epochs: int = 0


@dataclass
class ULAConfig:
    """Unsupervised label adaptation (docs/method.md sections 5 and 8)."""

    enabled: bool = True
    distance: Literal["euclidean", "jaccard"] = "euclidean"
    normalize: bool = True  # cluster L2-normalised features (Euclidean 1.0 == cosine 0.5)
    eps_mode: Literal["fixed", "quantile"] = "fixed"
    eps: float = 1.0
    eps_quantile: float = 0.002  # eps_mode=quantile: this quantile of the pairwise distances
    min_samples: int = 4
    # K base classes. num_classes wins when set; otherwise class_ratio x target training identities
    # (the paper's 750 on Market's 751 ids is class_ratio 1.0).
    num_classes: int | None = 750
    class_ratio: float = 1.0
    similarity_threshold: float = 0.8
    k1: int = 20  # k-reciprocal neighbours for the jaccard distance
    k2: int = 6
    # Degenerate clustering: refuse to train on it (docs/method.md section 5; see ula.py).
    max_cluster_fraction: float = 0.5
    min_labelled_fraction: float = 0.05


@dataclass
class KDConfig:
    enabled: bool = True
    mu: float = 0.5


@dataclass
class AdaptConfig:
    """Stage 2: cycles of ULA -> fine-tune -> KD merge -> evaluate."""

    cycles: int = 16
    cycle_epochs: int = 5
    lr: float = 1e-7  # as printed in the paper
    weight_decay: float = 5e-4
    stop_on_degenerate: bool = False


@dataclass
class EvalConfig:
    distance: Literal["euclidean", "cosine"] = "euclidean"
    rerank: bool = False
    max_rank: int = 50
    eval_source: bool = True
    batch_size: int = 256


@dataclass
class RuntimeConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    amp: bool = False
    channels_last: bool = False
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default


@dataclass
class ExperimentConfig:
    preset: str = "paper"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    ula: ULAConfig = field(default_factory=ULAConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values, as logged to a tracker (lists joined with '+')."""
        out = {}
        for key, value in flatten(self.to_dict()).items():
            out[key] = list_text(value) if isinstance(value, list) else value
        return out


# The scaled-down setting of the synthetic benchmark: small images, a small ResNet trained from
# scratch, and a learning rate that can move in a few epochs.
_CPU_PRESET: dict[str, Any] = {
    "data": {
        "root": None,
        "source": "synthetic_market",
        "target": "synthetic_duke",
        "height": 64,
        "width": 32,
        "batch_size": 64,
        "num_instances": 4,
        "workers": 0,
        "in_memory": True,
        "pad": 4,
    },
    "model": {"backbone": "resnet10", "pretrained": "none", "last_stride": 1},
    "source": {"epochs": 45, "lr": 3.5e-4, "step_size": 30, "warmup_epochs": 2},
    "ula": {"num_classes": None, "class_ratio": 1.0, "distance": "jaccard", "eps": 0.5},
    "adapt": {"cycles": 5, "cycle_epochs": 2, "lr": 3.5e-5},
    "eval": {"batch_size": 256},
    "runtime": {"device": "auto"},
}

PRESETS: dict[str, dict[str, Any]] = {"paper": {}, "cpu": _CPU_PRESET}


def preset(name: str) -> ExperimentConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}")
    config = ExperimentConfig(preset=name)
    _merge(config, PRESETS[name], prefix="")
    return config


def config_from_dict(values: dict[str, Any] | None, default_preset: str = "paper") -> ExperimentConfig:
    """A config from a nested mapping; its optional ``preset`` key picks the base values."""
    values = dict(values or {})
    base = values.pop("preset", default_preset)
    config = preset(base)
    _merge(config, values, prefix="")
    validate(config)
    return config


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, default_preset: str = "paper"
) -> ExperimentConfig:
    """Load YAML (or the paper's defaults when path is None) and apply ``key=value`` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist: pass the path of a YAML file")
        try:
            loaded = read_yaml(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML ({one_line(exc)}): fix its syntax") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(loaded).__name__}")
        values = loaded or {}
    config = config_from_dict(values, default_preset)
    if overrides:
        config = apply_overrides(config, overrides)
    return config


def apply_overrides(config: ExperimentConfig, overrides: list[str] | dict[str, Any]) -> ExperimentConfig:
    """Return a copy with dotted overrides applied: ``["ula.eps=0.8"]`` or ``{"ula.eps": 0.8}``."""
    pairs = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    new = config_from_dict(config.to_dict())
    for key, value in pairs.items():
        if key == "preset":
            raise ConfigError("preset cannot be overridden: pick it with the YAML's preset key or --preset")
        nested: dict[str, Any] = {}
        cursor = nested
        parts = key.split(".")
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[parts[-1]] = value
        _merge(new, nested, prefix="")
    validate(new)
    return new


def read_yaml(text: str) -> Any:
    """YAML as ``yaml.safe_load`` reads it, with floats in any YAML or Python notation."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader: the guarantees of yaml.safe_load


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["ula.eps=0.8", "adapt.lr=1e-5"]`` -> ``{"ula.eps": 0.8, "adapt.lr": 1e-05}``: the one parser of
    ``--set`` for both CLIs (values are YAML scalars, as in config files)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r} is not key=value: write it as e.g. --set ula.eps=0.8")
        try:
            out[key.strip()] = read_yaml(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({one_line(exc)}): quote it") from exc
    return out


def validate(config: ExperimentConfig) -> None:
    """Range checks a type cannot express."""
    checks = [
        ("data.height", config.data.height > 0),
        ("data.width", config.data.width > 0),
        ("data.batch_size", config.data.batch_size > 0),
        ("data.num_instances", 1 <= config.data.num_instances <= config.data.batch_size),
        ("data.workers", config.data.workers >= 0),
        ("data.flip_prob", 0 <= config.data.flip_prob <= 1),
        ("data.random_erasing_prob", 0 <= config.data.random_erasing_prob <= 1),
        ("data.color_jitter", config.data.color_jitter >= 0),
        ("data.pad", config.data.pad >= 0),
        ("data.synthetic_ids", config.data.synthetic_ids >= 4),
        ("model.last_stride", config.model.last_stride in (1, 2)),
        ("model.attention_reduction", config.model.attention_reduction >= 1),
        ("loss.label_smoothing", 0 <= config.loss.label_smoothing < 1),
        ("loss.triplet_margin", config.loss.triplet_margin >= 0),
        ("loss.center_weight", config.loss.center_weight >= 0),
        ("source.epochs", config.source.epochs >= 0),
        ("source.lr", config.source.lr > 0),
        ("source.step_size", config.source.step_size > 0),
        ("source.gamma", 0 < config.source.gamma <= 1),
        ("ula.eps", config.ula.eps > 0),
        ("ula.eps_quantile", 0 < config.ula.eps_quantile < 1),
        ("ula.min_samples", config.ula.min_samples >= 1),
        ("ula.num_classes", config.ula.num_classes is None or config.ula.num_classes >= 1),
        ("ula.class_ratio", config.ula.class_ratio > 0),
        ("ula.similarity_threshold", -1 <= config.ula.similarity_threshold <= 1),
        ("ula.max_cluster_fraction", 0 < config.ula.max_cluster_fraction <= 1),
        ("ula.min_labelled_fraction", 0 <= config.ula.min_labelled_fraction < 1),
        ("kd.mu", 0 <= config.kd.mu <= 1),
        ("adapt.cycles", config.adapt.cycles >= 0),
        ("adapt.cycle_epochs", config.adapt.cycle_epochs >= 1),
        ("adapt.lr", config.adapt.lr > 0),
        ("eval.max_rank", config.eval.max_rank >= 1),
    ]
    for name, ok in checks:
        if not ok:
            section, key = name.split(".")
            value = getattr(getattr(config, section), key)
            raise ConfigError(f"{name}={value!r} is out of range: see the field's comment in reidmodel/config.py")
    if not DEVICE_PATTERN.fullmatch(config.runtime.device):
        raise ConfigError(f"runtime.device={config.runtime.device!r} is not allowed: use auto, cpu, cuda or cuda:N")
    unknown = [stage for stage in config.model.attention if stage not in ATTENTION_STAGES]
    if unknown:
        raise ConfigError(
            f"model.attention has unknown stage(s) {unknown}: use a subset of {list(ATTENTION_STAGES)}"
        )
    if config.model.pretrained not in ("imagenet", "none") and not Path(config.model.pretrained).expanduser().exists():
        raise ConfigError(
            f"model.pretrained={config.model.pretrained!r} is neither 'imagenet', 'none' nor an existing file: "
            "point it at a torchvision ResNet state dict"
        )


def to_yaml(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> dotted keys, the form ``apply_overrides`` takes and MLflow params need (an empty
    mapping stays a value)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _merge(target: Any, values: dict[str, Any], prefix: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {values!r}")
    hints = get_type_hints(type(target))
    names = [f.name for f in dataclasses.fields(target)]
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key {dotted!r}: {suggest(key, names, prefix)}")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, prefix=dotted + ".")
        else:
            setattr(target, key, _coerce(value, hints[key], dotted))


def _coerce(value: Any, hint: Any, name: str) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, name)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{name} must not be empty")
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{name}={value!r} is not allowed: use one of {', '.join(map(str, allowed))}")
        return value
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.replace("+", ",").split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        (item,) = get_args(hint)
        return [_coerce(v, item, name) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{name}={value!r} is not a finite number: give a finite value")
            return float(value)
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{name} must be a string, got {value!r}")
    return value


__all__ = [
    "list_text",
    "flatten",
    "ATTENTION_STAGES",
    "AdaptConfig",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "KDConfig",
    "LossConfig",
    "ModelConfig",
    "PRESETS",
    "RuntimeConfig",
    "SourceConfig",
    "ULAConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "parse_overrides",
    "preset",
    "read_yaml",
    "to_yaml",
    "validate",
]

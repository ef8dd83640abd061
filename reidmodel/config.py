"""One typed configuration for an experiment, with the paper's defaults and a CPU preset.

Each setting is declared once below, with its type, range or choices, default (the paper's setting,
docs/method.md sections 3-8) and help; ``preset("cpu")`` is the scaled-down setting the synthetic benchmark
is calibrated for.
YAML files and ``--set key=value`` overrides are validated against that declaration (reidmodel/schema.py): an
unknown key names the closest valid one, a wrong type or an out-of-range value names the field, the value and
what is allowed. ``python -m reidmodel.train --help-config`` lists every setting.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, BeforeValidator, Field, ValidationError, ValidationInfo, field_validator

from reidmodel.messages import one_line
from reidmodel.schema import Int, Seed, Settings, Text, error_line

AttentionStage = Literal["conv3", "conv4", "conv5"]
ATTENTION_STAGES: tuple[str, ...] = get_args(AttentionStage)
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
# Marks a setting (or a whole section) that stage 1, the source pre-training, reads: the pre-training cache key
# (reidmodel.pipeline.pretrain_signature) is every marked setting, so a new one needs only this mark.
SOURCE_STAGE = {"stage": "source"}


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load`` that also reads YAML 1.2 / Python floats (``1e-5``, ``1.0e5``): YAML 1.1 wants a dot
    and a signed exponent, so a learning rate written as ``1e-5`` would otherwise be the string '1e-5'. A key
    given twice in one mapping is an error: PyYAML would keep the last value without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # a merge key (<<) overrides on purpose; other keys are refused by PyYAML itself
            key, line = self.construct_object(key_node), key_node.start_mark.line + 1
            if key in lines:
                raise yaml.constructor.ConstructorError(
                    problem=f"key {key!r} is given twice, on lines {lines[key]} and {line}: keep one")
            lines[key] = line
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def list_text(values: list) -> str:
    """The one text form of a list setting (attention stages): 'conv3+conv4', as MLflow params, Optuna's
    categorical values and report cells carry it; ``from_list_text`` reads it back."""
    return "+".join(map(str, values))


def from_list_text(value: Any) -> Any:
    """'conv3+conv4' (or 'conv3,conv4') -> ['conv3', 'conv4']; anything else is left to validation."""
    if isinstance(value, str):
        return [v for v in value.replace("+", ",").split(",") if v]
    return list(value) if isinstance(value, tuple) else value


class ConfigError(ValueError):
    """A configuration problem, phrased as one line that names the field and the fix."""


class DataConfig(Settings):
    """Datasets, input size, the P x K sampler and augmentation (docs/data.md)."""

    root: Text | None = Field(
        None, json_schema_extra=SOURCE_STAGE,
        description="folder holding the datasets; null: the embedded synthetic benchmark, generated on "
        "first use into data.synthetic_cache")
    source: Text = Field(
        "dukemtmc", json_schema_extra=SOURCE_STAGE,
        description="labelled source dataset: market1501, dukemtmc, msmt17, synthetic_market, "
        "synthetic_duke or a Market-layout folder under root")
    target: Text = Field("market1501", description="unlabelled target dataset (names as for data.source)")
    height: Int = Field(256, gt=0, json_schema_extra=SOURCE_STAGE, description="input image height in pixels")
    width: Int = Field(128, gt=0, json_schema_extra=SOURCE_STAGE, description="input image width in pixels")
    batch_size: Int = Field(
        64, gt=0, json_schema_extra=SOURCE_STAGE,
        description="training images per batch (P identities x K images)")
    num_instances: Int = Field(
        4, ge=1, json_schema_extra=SOURCE_STAGE,
        description="K of the P x K identity sampler: images per identity in a batch (<= batch_size)")
    max_batches: Int | None = Field(
        None, ge=1, json_schema_extra=SOURCE_STAGE,
        description="a rehearsal's short schedule: train on the first N P x K batches of every epoch; "
        "null: the whole epoch")
    workers: Int = Field(4, ge=0, description="data-loading worker processes; 0 loads in the training process")
    in_memory: bool = Field(
        False, description="decode every image once and keep the uint8 tensors in memory (small datasets)")
    flip_prob: float = Field(
        0.5, ge=0, le=1, json_schema_extra=SOURCE_STAGE, description="probability of a horizontal flip")
    pad: Int = Field(
        10, ge=0, json_schema_extra=SOURCE_STAGE,
        description="zero padding in pixels before the random crop; 0: no crop")
    color_jitter: float = Field(
        0.2, ge=0, json_schema_extra=SOURCE_STAGE,
        description="brightness/contrast/saturation jitter strength; 0 disables it")
    random_erasing_prob: float = Field(
        0.5, ge=0, le=1, json_schema_extra=SOURCE_STAGE, description="probability of random erasing")
    synthetic_cache: Text = Field(
        "~/.cache/reid-study/synthetic", description="where the synthetic benchmark is generated and kept")
    synthetic_ids: Int = Field(
        120, ge=4, json_schema_extra=SOURCE_STAGE, description="training identities per synthetic domain")
    synthetic_seed: Seed = Field(
        0, json_schema_extra=SOURCE_STAGE, description="seed the synthetic benchmark is generated from")
    target_val_ids: Int = Field(
        0, ge=0, description="labelled target training identities held out of ULA's pool and evaluated every cycle "
        "as target_val_* (a validation split that reads target labels, never the test split's); 0: none")

    @field_validator("num_instances")
    @classmethod
    def _fits_a_batch(cls, num_instances: int, info: ValidationInfo) -> int:
        batch_size = info.data.get("batch_size")  # absent when it failed its own check
        if batch_size is not None and num_instances > batch_size:
            raise ValueError(f"is out of range (<= data.batch_size={batch_size}): lower it or raise "
                             "data.batch_size")
        return num_instances


class ModelConfig(Settings):
    """The network: a ResNet with CBAM attention and a BNNeck (docs/method.md section 3)."""

    backbone: Literal["resnet18", "resnet34", "resnet50", "resnet10"] = Field(
        "resnet50", description="torchvision ResNet the network is built on")
    pretrained: Text = Field(
        "imagenet", description="backbone weights: imagenet, none (from scratch) or the path of a torchvision "
        "ResNet state dict")
    last_stride: Int = Field(
        1, ge=1, le=2, description="stride of the last ResNet stage (1 doubles the feature map)")
    attention: Annotated[list[AttentionStage], BeforeValidator(from_list_text)] = Field(
        default_factory=lambda: list(ATTENTION_STAGES),
        description="stages followed by a CBAM attention module: [conv3, conv4] or conv3+conv4; [] for none")
    attention_reduction: Int = Field(16, ge=1, description="channel reduction ratio of the CBAM channel attention")
    bnneck: bool = Field(True, description="BatchNorm neck between the triplet feature and the classifier")

    @field_validator("pretrained")
    @classmethod
    def _weights_exist(cls, pretrained: str) -> str:
        if pretrained not in ("imagenet", "none") and not Path(pretrained).expanduser().exists():
            raise ValueError("is neither 'imagenet', 'none' nor an existing file: point it at a torchvision "
                             "ResNet state dict")
        return pretrained


class LossConfig(Settings):
    """The losses of both stages: identity, triplet and centre (docs/method.md section 4)."""

    label_smoothing: float = Field(0.1, ge=0, lt=1, description="label smoothing of the identity cross-entropy")
    triplet_margin: float = Field(0.3, ge=0, description="margin of the batch-hard triplet loss")
    center_weight: float = Field(0.0035, ge=0, description="beta: weight of the centre loss")
    center_lr: float = Field(0.5, ge=0, description="learning rate of the centre loss's own SGD on the centres")


class SourceConfig(Settings):
    """Stage 1: supervised pre-training on the labelled source domain."""

    epochs: Int = Field(120, ge=0, description="pre-training epochs on the labelled source domain")
    # The paper prints 3.5e-5; the strong baseline it builds on uses 3.5e-4 (see docs/method.md section 8).
    lr: float = Field(3.5e-5, gt=0, description="Adam learning rate of pre-training (the paper prints 3.5e-5)")
    weight_decay: float = Field(5e-4, ge=0, description="Adam weight decay of pre-training")
    step_size: Int = Field(50, gt=0, description="epochs between two learning-rate decays")
    gamma: float = Field(0.1, gt=0, le=1, description="learning-rate factor at each decay")
    warmup_epochs: Int = Field(0, ge=0, description="epochs of linear learning-rate warm-up; 0: none")


class ULAConfig(Settings):
    """Unsupervised label adaptation (docs/method.md sections 5 and 8)."""

    enabled: bool = Field(
        True, description="pseudo-label the target by clustering; false: no adaptation training")
    distance: Literal["euclidean", "jaccard"] = Field(
        "euclidean", description="distance DBSCAN clusters on (jaccard: k-reciprocal)")
    normalize: bool = Field(True, description="cluster L2-normalised features (Euclidean 1.0 == cosine 0.5)")
    eps_mode: Literal["fixed", "quantile"] = Field(
        "fixed", description="fixed: DBSCAN eps is ula.eps; quantile: the ula.eps_quantile quantile of the "
        "distances")
    eps: float = Field(1.0, gt=0, description="DBSCAN neighbourhood radius (eps_mode=fixed)")
    eps_quantile: float = Field(
        0.002, gt=0, lt=1, description="eps_mode=quantile: this quantile of the pairwise distances is eps")
    min_samples: Int = Field(4, ge=1, description="DBSCAN min_samples: neighbours that make a core point")
    # num_classes wins when set; the paper's 750 on Market's 751 ids is class_ratio 0.998668442.
    num_classes: Int | None = Field(
        750, ge=1, description="K base classes; null: ula.class_ratio x the target's training identities")
    class_ratio: float = Field(
        1.0, gt=0, description="K as a fraction of what ula.class_ratio_of names (num_classes null)")
    class_ratio_of: Literal["identities", "clusters"] = Field(
        "identities", description="what ula.class_ratio multiplies: the target's training identities (as the "
        "paper's 750 of 751: a count of the target's labels) or the clusters DBSCAN finds at each ULA step "
        "(label-free)")
    similarity_threshold: float = Field(
        0.8, ge=-1, le=1, description="cosine similarity above which a sample joins its closest template")
    k1: Int = Field(20, ge=1, description="k-reciprocal neighbours of the jaccard distance")
    k2: Int = Field(6, ge=1, description="neighbours averaged by the jaccard distance's query expansion")
    # Degenerate clustering: refuse to train on it (docs/method.md section 5; see ula.py).
    max_cluster_fraction: float = Field(
        0.5, gt=0, le=1, description="a largest cluster above this fraction of the target is degenerate")
    min_labelled_fraction: float = Field(
        0.05, ge=0, lt=1, description="fewer labelled samples than this fraction of the target is degenerate")


class KDConfig(Settings):
    """The teacher: the paper's per-cycle weight merge or a mean teacher (docs/method.md 6, 10)."""

    enabled: bool = Field(
        True, description="merge weights after every cycle; false: the fine-tuned model is kept (mu = 1)")
    mu: float = Field(
        0.5, ge=0, le=1, description="weight of the fine-tuned model in the merge W := (1 - mu) W + mu W_tuned")
    teacher: Literal["weight_merge", "ema"] = Field(
        "weight_merge", description="weight_merge: the paper's merge once per cycle (kd.mu); ema: a mean teacher "
        "updated after every fine-tuning step (kd.ema_momentum, as in MMT), which clusters and is evaluated")
    ema_momentum: float = Field(
        0.999, gt=0, lt=1, description="kd.teacher=ema: weight of the old teacher in each step's update, "
        "ramped as min(1 - 1/(step + 1), momentum)")

    @field_validator("teacher")
    @classmethod
    def _teacher_needs_kd(cls, teacher: str, info: ValidationInfo) -> str:
        if teacher == "ema" and info.data.get("enabled") is False:
            raise ValueError("needs kd.enabled=true (without KD the fine-tuned model is the target): set "
                             "kd.enabled=true or kd.teacher=weight_merge")
        return teacher


class AdaptConfig(Settings):
    """Stage 2: cycles of ULA -> fine-tune -> KD merge -> evaluate."""

    cycles: Int = Field(
        16, ge=0, description="adaptation cycles (ULA, fine-tune, KD merge, evaluate); 0: source-only")
    cycle_epochs: Int = Field(5, ge=1, description="fine-tuning epochs per cycle")
    lr: float = Field(1e-7, gt=0, description="Adam learning rate of fine-tuning (1e-7 as printed in the paper)")
    weight_decay: float = Field(5e-4, ge=0, description="Adam weight decay of fine-tuning")
    loss: Literal["ce_triplet", "cluster_memory"] = Field(
        "ce_triplet", description="fine-tuning loss on the pseudo labels: ce_triplet (the paper's ID + triplet + "
        "centre losses on the template classifier) or cluster_memory (InfoNCE over cluster centroids, memory.*)")
    stop_on_degenerate: bool = Field(
        False, description="end the run at the first degenerate clustering instead of skipping that cycle")


class MemoryConfig(Settings):
    """The centroid memory of adapt.loss=cluster_memory (Cluster Contrast; docs/method.md 10)."""

    momentum: float = Field(
        0.1, ge=0, lt=1, description="weight of the old centroid in each per-sample update c := m c + (1 - m) f")
    temperature: float = Field(0.05, gt=0, description="temperature of the InfoNCE over the centroids")
    triplet: bool = Field(False, description="add the batch-hard triplet loss (loss.triplet_margin) to the InfoNCE")


class EvalConfig(Settings):
    """Evaluation under the Market protocol (docs/method.md section 7)."""

    distance: Literal["euclidean", "cosine"] = Field("euclidean", description="query-gallery distance")
    rerank: bool = Field(False, description="k-reciprocal re-ranking of the distances (not in the paper)")
    max_rank: Int = Field(50, ge=1, description="longest rank of the CMC curve")
    eval_source: bool = Field(True, description="also evaluate on the source domain every cycle")
    batch_size: Int = Field(256, ge=1, description="images per batch when extracting features")
    validator_samples: Int = Field(
        2048, ge=0, description="target training images (a seeded sample, the same every cycle) the label-free "
        "validators read per cycle; 0: no validators")


class RuntimeConfig(Settings):
    """Where and how a run executes: device, seed, precision, threads."""

    device: Text = Field("auto", description="auto, cpu, cuda or cuda:N (auto: cuda when available)")
    seed: Seed = Field(
        0, json_schema_extra=SOURCE_STAGE,
        description="seed of every random draw: the same seed gives the same metrics")
    amp: bool = Field(False, json_schema_extra=SOURCE_STAGE, description="mixed precision on CUDA")
    channels_last: bool = Field(False, description="channels-last memory format for convolutions")
    threads: Int = Field(0, ge=0, description="torch intra-op threads; 0 keeps torch's default")

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not DEVICE_PATTERN.fullmatch(device):
            raise ValueError("is not allowed: use auto, cpu, cuda or cuda:N")
        return device


class ExperimentConfig(Settings):
    """An experiment's settings, one section per part of the method."""

    preset: Text = Field("paper", description="the preset the values start from: paper or cpu")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig, json_schema_extra=SOURCE_STAGE)
    loss: LossConfig = Field(default_factory=LossConfig, json_schema_extra=SOURCE_STAGE)
    source: SourceConfig = Field(default_factory=SourceConfig, json_schema_extra=SOURCE_STAGE)
    ula: ULAConfig = Field(default_factory=ULAConfig)
    kd: KDConfig = Field(default_factory=KDConfig)
    adapt: AdaptConfig = Field(default_factory=AdaptConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values, as logged to a tracker (lists in their text form, ``list_text``)."""
        return {key: list_text(value) if isinstance(value, list) else value
                for key, value in flatten(self.to_dict()).items()}


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
    return _validated(ExperimentConfig, {"preset": name, **PRESETS[name]})


def config_from_dict(
    values: dict[str, Any] | None, default_preset: str = "paper", *, schema: type[ExperimentConfig] = ExperimentConfig
) -> ExperimentConfig:
    """A config from a nested mapping; its optional ``preset`` key picks the base values. ``schema``: a subclass
    of ExperimentConfig that declares more settings."""
    values = dict(values or {})
    base = values.pop("preset", default_preset)
    return _validated(schema, _merged(preset(base).to_dict(), values))


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    default_preset: str = "paper",
    *,
    schema: type[ExperimentConfig] = ExperimentConfig,
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
    config = config_from_dict(values, default_preset, schema=schema)
    if overrides:
        config = apply_overrides(config, overrides)
    return config


def apply_overrides(config: ExperimentConfig, overrides: list[str] | dict[str, Any]) -> ExperimentConfig:
    """Return a copy with dotted overrides applied: ``["ula.eps=0.8"]`` or ``{"ula.eps": 0.8}``, validated
    by the config's own class."""
    pairs = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    if "preset" in pairs:
        raise ConfigError("preset cannot be overridden: pick it with the YAML's preset key or --preset")
    nested: dict[str, Any] = {}
    for key, value in pairs.items():  # later keys win, as they would one after the other
        for part in reversed(key.split(".")):
            value = {part: value}
        nested = _merged(nested, value)
    return _validated(type(config), _merged(config.to_dict(), nested))


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


def to_yaml(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def marked_settings(settings: BaseModel, mark: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value of every setting declared with ``json_schema_extra=mark``; a marked section counts
    with all its settings."""
    found: dict[str, Any] = {}
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        if field.json_schema_extra == mark:
            found.update(flatten({name: value.model_dump()}, prefix) if isinstance(value, BaseModel)
                         else {f"{prefix}{name}": value})
        elif isinstance(value, BaseModel):
            found.update(marked_settings(value, mark, f"{prefix}{name}."))
    return found


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


def _merged(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` laid over ``base``: a mapping over a mapping merges, anything else replaces."""
    merged = dict(base)
    for key, value in values.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _merged(base[key], value) if both else value
    return merged


def _validated(schema: type[ExperimentConfig], values: dict[str, Any]) -> ExperimentConfig:
    try:
        return schema.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(error_line(exc, schema, noun="config key")) from None


__all__ = [
    "list_text",
    "from_list_text",
    "flatten",
    "ATTENTION_STAGES",
    "AdaptConfig",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "KDConfig",
    "LossConfig",
    "MemoryConfig",
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
]

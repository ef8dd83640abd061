import pytest
import yaml

from reidmodel.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    preset,
    to_yaml,
)


def test_defaults_are_the_papers():
    config = ExperimentConfig()
    assert config.model.backbone == "resnet50"
    assert config.model.attention == ["conv3", "conv4", "conv5"]
    assert (config.data.height, config.data.width, config.data.batch_size) == (256, 128, 64)
    assert config.loss.label_smoothing == 0.1
    assert config.loss.triplet_margin == 0.3
    assert config.loss.center_weight == 0.0035
    assert (config.ula.eps, config.ula.similarity_threshold, config.ula.num_classes) == (1.0, 0.8, 750)
    assert (config.kd.mu, config.adapt.cycle_epochs, config.adapt.cycles) == (0.5, 5, 16)
    assert (config.source.epochs, config.source.step_size, config.source.lr) == (120, 50, 3.5e-5)


def test_cpu_preset_changes_only_what_it_names():
    cpu = preset("cpu")
    assert cpu.preset == "cpu"
    assert cpu.model.backbone == "resnet10"
    assert cpu.data.root is None and cpu.data.source == "synthetic_market"
    assert cpu.loss == ExperimentConfig().loss


def test_yaml_roundtrip(tmp_path):
    config = apply_overrides(preset("cpu"), ["ula.eps=0.7", "model.attention=[conv4]"])
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(config))
    assert load_config(path) == config


def test_overrides_parse_types():
    config = apply_overrides(preset("cpu"), ["ula.eps=0.8", "kd.enabled=false", "model.attention=conv4+conv5",
                                              "ula.num_classes=null", "adapt.cycles=3"])
    assert config.ula.eps == 0.8 and config.kd.enabled is False
    assert config.model.attention == ["conv4", "conv5"]
    assert config.ula.num_classes is None and config.adapt.cycles == 3
    assert apply_overrides(config, {"model.attention": []}).model.attention == []


def test_overrides_do_not_mutate_the_input():
    config = preset("cpu")
    apply_overrides(config, ["ula.eps=0.3"])
    assert config.ula.eps == preset("cpu").ula.eps


@pytest.mark.parametrize(
    "override, message",
    [
        ("ula.epz=1", "unknown config key 'ula.epz': did you mean ula.eps?"),
        ("ulaa.eps=1", "unknown config key 'ulaa': did you mean ula?"),
        ("ula.eps=-1", "ula.eps=-1 is out of range (> 0): give a value in that range - DBSCAN"),
        ("kd.mu=1.5", "kd.mu=1.5 is out of range (>= 0, <= 1)"),
        ("kd.enabled=maybe", "kd.enabled='maybe' is not true or false: write true or false"),
        ("adapt.cycles=2.5", "adapt.cycles=2.5 is not an integer"),
        ("adapt.cycles=true", "adapt.cycles=True is not an integer"),
        ("ula.eps='0.5'", "ula.eps='0.5' is not a number"),
        ("ula.distance=manhattan", "ula.distance='manhattan' is not allowed: use one of euclidean, jaccard"),
        ("model.attention=[conv2]", "model.attention[0]='conv2' is not allowed: use one of conv3, conv4, conv5"),
        ("model.attention=conv4+conv2", "model.attention[1]='conv2' is not allowed"),
        ("model.attention=3", "model.attention=3 is not a list"),
        ("model.pretrained=/no/such/file.pth", "model.pretrained='/no/such/file.pth' is neither"),
        ("runtime.device=tpu", "runtime.device='tpu' is not allowed: use auto, cpu, cuda or cuda:N"),
        ("data.num_instances=65", "data.num_instances=65 is out of range (<= data.batch_size=64)"),
        ("ula.num_classes=0", "ula.num_classes=0 is out of range (>= 1)"),
        ("ula.eps.x=1", "ula.eps is not a number"),
        ("ula=3", "ula=3 is not a mapping"),
        ("ula.eps", "is not key=value"),
        ("preset=cpu", "preset cannot be overridden"),
    ],
)
def test_bad_overrides_name_the_field(override, message):
    with pytest.raises(ConfigError) as info:
        apply_overrides(preset("cpu"), [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ula: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(bad)
    bad.write_text(yaml.safe_dump({"preset": "laptop"}))
    with pytest.raises(ConfigError, match="unknown preset 'laptop'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="ula=3 is not a mapping"):
        config_from_dict({"ula": 3})


def test_flat_joins_lists():
    flat = preset("cpu").flat()
    assert flat["model.attention"] == "conv3+conv4+conv5"
    assert flat["ula.eps"] == preset("cpu").ula.eps


def test_list_settings_have_one_text_form_that_reads_back():
    from reidmodel.config import list_text

    config = apply_overrides(preset("cpu"), {"model.attention": ["conv3", "conv5"]})
    text = config.flat()["model.attention"]
    assert text == list_text(["conv3", "conv5"]) == "conv3+conv5"
    assert apply_overrides(preset("cpu"), {"model.attention": text}).model.attention == ["conv3", "conv5"]


def test_yaml_values_are_coerced_as_declared():
    config = apply_overrides(preset("cpu"), {"adapt.cycles": 3.0, "ula.eps": 1, "data.source": 1501,
                                             "ula.num_classes": 700.0, "model.attention": ("conv4",)})
    assert config.adapt.cycles == 3 and type(config.adapt.cycles) is int
    assert config.ula.eps == 1.0 and type(config.ula.eps) is float
    assert config.data.source == "1501" and config.ula.num_classes == 700
    assert config.model.attention == ["conv4"]
    assert apply_overrides(preset("cpu"), ["model.attention=conv3,conv5"]).model.attention == ["conv3", "conv5"]


def test_overrides_are_checked_together_and_later_keys_win():
    small = apply_overrides(preset("cpu"), {"data.batch_size": 16, "data.num_instances": 4})
    # num_instances may pass batch_size's old value: only the final config is checked
    assert apply_overrides(small, {"data.num_instances": 32, "data.batch_size": 64}).data.num_instances == 32
    config = apply_overrides(preset("cpu"), {"ula": {"eps": 0.3}, "ula.k1": 7})
    assert (config.ula.eps, config.ula.k1, config.ula.distance) == (0.3, 7, "jaccard")
